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
  assert.match(readme, /`bash \.ci\/run` [^.]*ends with its own plain line, `N passed, N failed`/);
});
