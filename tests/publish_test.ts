// The package as JSR would receive it: `deno publish --dry-run` passes without a warning, ships the
// CLIs and none of the test-only files.
import assert from "node:assert/strict";

Deno.test("deno publish --dry-run: no warnings, serve.ts and commands.ts in, test files out", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, log);
  assert.doesNotMatch(log, /^warning/m, log);
  for (const f of ["bin/serve.ts", "serve.ts", "commands.ts", "cli.ts", "mod.ts"]) {
    assert.match(log, new RegExp(`/${f} \\(`), f);
  }
  assert.doesNotMatch(log, /_test_strings\.ts|_test\.ts \(|tests\/fixtures/);
  const exports = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)))
    .exports;
  assert.deepEqual(exports, {
    ".": "./mod.ts",
    "./serve": "./bin/serve.ts",
    "./cli": "./commands.ts",
  });
});
