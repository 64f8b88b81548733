// The README's setup facts agree with what CI really does.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const readme = Deno.readTextFileSync(new URL("README.md", root));
const ci = Deno.readTextFileSync(new URL(".ci/run", root));

Deno.test("README: the apt-get line lists every Debian package .ci/run installs", () => {
  const pkgs = /^PKGS="([^"]+)"/m.exec(ci)?.[1].split(/\s+/) ?? [];
  assert.ok(pkgs.includes("fonts-wqy-microhei"), `.ci/run installs ${pkgs.join(", ")}`);
  const apt = /`apt-get install -y ([^`]+)`/.exec(readme.replace(/\n/g, " "))?.[1].split(/\s+/);
  assert.ok(apt, "the README has an apt-get install line");
  for (const p of pkgs) assert.ok(apt.includes(p), `the README's apt-get line lacks ${p}`);
});

Deno.test("README: the plain 'N passed, N failed' line is .ci/run's, the test task ends with Deno's", () => {
  assert.match(ci, /line="\$\{passed\} passed, \$\{failed:-0\} failed"/);
  assert.match(readme, /task test +# .*"ok \| N passed \| 0 failed"/);
  // (the README's prose is wrapped at 100 columns: any line break counts as a space)
  assert.match(
    readme.replace(/\s+/g, " "),
    /`bash \.ci\/run` [^.]*ends with its own plain line, `N passed, N failed`/,
  );
});

Deno.test("bench/: every *_bench.ts registers Deno.bench cases, and the README names each", () => {
  const files = [...Deno.readDirSync(new URL("bench/", root))]
    .map((e) => e.name).filter((n) => n.endsWith("_bench.ts")).sort();
  assert.ok(files.length >= 8, `bench/ has ${files.join(", ")}`);
  for (const f of files) {
    const src = Deno.readTextFileSync(new URL(`bench/${f}`, root));
    // `deno bench` on a file without a case prints an empty table
    assert.match(src, /Deno\.bench\(/, `bench/${f} registers no Deno.bench case`);
    assert.ok(readme.includes(f), `the README does not name bench/${f}`);
  }
});
