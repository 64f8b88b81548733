/**
 * `bench/gpu_check.sh --tiny` runs end to end on the software adapter (what a GPU machine runs at
 * full size): every row of the GPU report is there with a number (the float16 ones too: the
 * software adapter has shader-f16), and the PyTorch CUDA side says why it was skipped.
 * @module
 */
import assert from "node:assert/strict";

Deno.test("bench/gpu_check.sh --tiny prints the whole GPU report on the software adapter", async () => {
  const script = new URL("../bench/gpu_check.sh", import.meta.url).pathname;
  const out = await new Deno.Command("bash", {
    args: [script, "--tiny"],
    // this deno (CI may run one that is not on the PATH); the report imports only local files
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", DENO: Deno.execPath() },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `exit ${out.code}\n${text}\n${new TextDecoder().decode(out.stderr)}`);
  const rows = text.split("\n").filter((l) => l.startsWith("| "));
  const row = (re: RegExp) => rows.filter((l) => re.test(l));
  // the software adapter has shader-f16: the float16 rows are there too
  assert.equal(row(/^\| matmul .* f32 NN .*GFLOP\/s/).length, 2, text);
  assert.equal(row(/^\| matmul .* f16 operands, f32 sums NN .*GFLOP\/s/).length, 2, text);
  const train = row(/^\| train .*B2×T32 .*\d+ tokens\/s \(loss \d/);
  assert.equal(train.length, 3, `minimind2, minimind2 float16, minimind3:\n${text}`);
  assert.equal(row(/B2×T32 float16 .*\d+ tokens\/s/).length, 1, text);
  assert.equal(
    row(/dispatches \/ submits \/ syncs\s+\| [\d.]+ \/ [\d.]+ \/ [\d.]+/).length,
    3,
    text,
  );
  assert.equal(row(/PyTorch CUDA fp32 eager .*skipped: software adapter/).length, 2, text);
  assert.equal(
    row(/PyTorch CUDA float16 autocast \+ GradScaler .*skipped: software/).length,
    1,
    text,
  );
  assert.equal(row(/^\| decode .*batch \d+ .*[\d.]+ tokens\/s/).length, 3, text);
  assert.match(text, /tests: skipped with --tiny/);
});
