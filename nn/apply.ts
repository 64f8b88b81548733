/**
 * Running an op: `apply` checks the inputs share a backend, infers the outputs, runs the op's
 * kernel there (a view makes a new handle on its input's storage instead) and records it on the
 * tape for autodiff.
 * @module
 */
import type { Backend } from "./backend/backend.ts";
import { defaultBackend } from "./backend/select.ts";
import type { OpDef, VjpContext } from "./op.ts";
import { NONDIFF } from "./op.ts";
import { metaOf, Tensor } from "./tensor.ts";
import { record } from "./tape.ts";

function pick(spec: boolean | readonly number[] | undefined, n: number, dflt: boolean): boolean[] {
  if (spec === undefined) return new Array(n).fill(dflt);
  if (typeof spec === "boolean") return new Array(n).fill(spec);
  const out = new Array(n).fill(false);
  for (const i of spec) out[i] = true;
  return out;
}

function commonBackend(name: string, inputs: readonly Tensor[]): Backend {
  const b = inputs[0].backend;
  for (const x of inputs) {
    if (x.backend !== b) {
      throw new Error(
        `Cannot apply ${name} to tensors on different backends (${b.name} and ${x.backend.name})`,
      );
    }
  }
  return b;
}

/**
 * Runs `op` on `inputs` and records it for autodiff.
 *
 * @param op the primitive
 * @param inputs input tensors (all on one backend)
 * @param params static parameters
 * @returns the outputs
 */
export function apply<P>(op: OpDef<P>, inputs: readonly Tensor[], params: P): Tensor[] {
  const inMetas = inputs.map(metaOf);
  const outMetas = op.infer(inMetas, params);
  let outs: Tensor[];
  if (op.view) {
    const m = outMetas[0];
    outs = [new Tensor(inputs[0].storage, m.shape, m.dtype)];
  } else {
    const backend = inputs.length ? commonBackend(op.name, inputs) : defaultBackend();
    const st = backend.run(op, inputs.map((x) => x.storage), inMetas, outMetas, params);
    outs = st.map((s, i) => new Tensor(s, outMetas[i].shape, outMetas[i].dtype));
  }
  const rule = op.vjp;
  if (rule !== NONDIFF) {
    record(
      op.name,
      inputs,
      outs,
      () => {
        const si = pick(op.saves?.inputs, inputs.length, true);
        const so = pick(op.saves?.outputs, outs.length, false);
        return [
          ...inputs.map((x, i) => (si[i] ? x : null)),
          ...outs.map((o, i) => (so[i] ? o : null)),
        ];
      },
      (saved) => {
        const ctx: VjpContext<P> = {
          inputs: saved.slice(0, inputs.length),
          outputs: saved.slice(inputs.length),
          inMetas,
          outMetas,
          params,
        };
        return (cts) => rule(cts, ctx);
      },
      op.statOutputs,
    );
  }
  return outs;
}

/** Runs a single-output op. */
export function apply1<P>(op: OpDef<P>, inputs: readonly Tensor[], params: P): Tensor {
  return apply(op, inputs, params)[0];
}
