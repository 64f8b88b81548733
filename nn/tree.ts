/**
 * Parameter trees: nested plain objects / arrays whose leaves are tensors (or null where a
 * `partition` left a hole). Keys mirror HF state-dict names, so `flatten` gives
 * `"model.layers.0.self_attn.q_proj.weight"` and conversion is a key map.
 * @module
 */
import { Tensor } from "./tensor.ts";

/** A leaf: a tensor, or a non-tensor value (null marks a hole left by `partition`). */
export type Leaf = Tensor | null | undefined | number | string | boolean;

/** A nested structure of arrays and plain objects with leaves. */
export type Tree = Leaf | readonly Tree[] | { readonly [key: string]: Tree };

/** A tree whose leaves are all tensors (what params, grads and optimizer states are). */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [key: string]: TensorTree };

function isNode(x: unknown): x is object {
  if (x === null || typeof x !== "object" || x instanceof Tensor) return false;
  if (Array.isArray(x)) return true;
  const p = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

/**
 * Every leaf in depth-first key order (objects in insertion order, arrays by index).
 *
 * @param tree a tree
 * @returns its leaves
 */
export function leaves(tree: Tree): Leaf[] {
  const out: Leaf[] = [];
  const walk = (t: Tree) => {
    if (Array.isArray(t)) { for (const c of t) walk(c); }
    else if (isNode(t)) { for (const c of Object.values(t)) walk(c as Tree); }
    else out.push(t as Leaf);
  };
  walk(tree);
  return out;
}

/**
 * Maps every leaf, keeping the structure.
 *
 * @param tree a tree
 * @param fn leaf → new leaf (gets the dotted path too)
 * @returns the mapped tree
 */
export function mapTree(tree: Tree, fn: (leaf: Leaf, path: string) => Tree): Tree {
  const walk = (t: Tree, path: string): Tree => {
    if (Array.isArray(t)) return t.map((c, i) => walk(c, path ? `${path}.${i}` : String(i)));
    if (isNode(t)) {
      const o: Record<string, Tree> = {};
      for (const [k, v] of Object.entries(t)) o[k] = walk(v as Tree, path ? `${path}.${k}` : k);
      return o;
    }
    return fn(t as Leaf, path);
  };
  return walk(tree, "");
}

/**
 * Flattens to `{dotted.path: tensor}` (null/non-tensor leaves are skipped).
 *
 * @param tree a tree
 * @returns a record keyed by HF-style dotted paths
 * @example
 * ```ts
 * import { tree, tensor } from "@minimind/ts";
 * const flat = tree.flatten({ model: { layers: [{ w: tensor([1]) }] } }); // { "model.layers.0.w": … }
 * ```
 */
export function flatten(tree: Tree): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  mapTree(tree, (leaf, path) => {
    if (leaf instanceof Tensor) out[path] = leaf;
    return leaf;
  });
  return out;
}

/**
 * Rebuilds a tree from dotted paths; a level whose keys are exactly 0..n−1 becomes an array.
 *
 * @param flat record keyed by dotted paths
 * @returns the nested tree
 */
export function unflatten<T extends Leaf = Tensor>(flat: Record<string, T>): Tree {
  const root: Record<string, unknown> = {};
  for (const [path, v] of Object.entries(flat)) {
    const parts = path.split(".");
    let node = root;
    for (let i = 0; i < parts.length - 1; i++) {
      const k = parts[i];
      const next = node[k];
      if (next === undefined) node[k] = {};
      else if (!isNode(next)) {
        throw new Error(
          `Cannot unflatten "${path}": "${parts.slice(0, i + 1).join(".")}" is a leaf`,
        );
      }
      node = node[k] as Record<string, unknown>;
    }
    const last = parts[parts.length - 1];
    if (last in node) throw new Error(`Cannot unflatten "${path}": the key appears twice`);
    node[last] = v;
  }
  const fix = (n: unknown): unknown => {
    if (!isNode(n) || Array.isArray(n)) return n;
    const o = n as Record<string, unknown>;
    const keys = Object.keys(o);
    for (const k of keys) o[k] = fix(o[k]);
    const nums = keys.map(Number).sort((a, b) => a - b);
    const isArray = keys.length > 0 && keys.every((k) => /^\d+$/.test(k)) &&
      nums.every((k, i) => k === i);
    if (isArray) return nums.map((i) => o[String(i)]);
    return o;
  };
  return fix(root) as Tree;
}

/**
 * Maps leaves of several trees of the same structure together.
 *
 * @param trees trees with identical structure
 * @param fn (leaves…, path) → new leaf
 * @returns the mapped tree
 */
export function zip(trees: readonly Tree[], fn: (leaves: Leaf[], path: string) => Tree): Tree {
  if (trees.length === 0) throw new Error("Cannot zip zero trees");
  const lists = trees.map(leaves);
  const n = lists[0].length;
  for (let i = 1; i < lists.length; i++) {
    if (lists[i].length !== n) {
      throw new Error(
        `Cannot zip trees with ${n} and ${lists[i].length} leaves: structures differ`,
      );
    }
  }
  let k = 0;
  return mapTree(trees[0], (_, path) => {
    const r = fn(lists.map((l) => l[k]), path);
    k++;
    return r;
  });
}

/**
 * Splits a tree in two by a predicate on (leaf, path): `[matching, rest]`, each with null where
 * the other has the leaf (Equinox `partition`).
 *
 * @param tree a tree
 * @param pred selects the first half
 * @returns `[selected, rest]`
 */
export function partition(tree: Tree, pred: (leaf: Leaf, path: string) => boolean): [Tree, Tree] {
  const a = mapTree(tree, (l, p) => (l !== null && pred(l, p) ? l : null));
  const b = mapTree(tree, (l, p) => (l !== null && pred(l, p) ? null : l));
  return [a, b];
}

/**
 * Recombines halves from `partition`: the first non-null leaf wins.
 *
 * @param trees halves with identical structure
 * @returns the merged tree
 */
export function combine(...trees: Tree[]): Tree {
  const lists = trees.map(leaves);
  let k = 0;
  return mapTree(trees[0], () => {
    let v: Leaf = null;
    for (const l of lists) {
      if (l[k] !== null && l[k] !== undefined) {
        v = l[k];
        break;
      }
    }
    k++;
    return v;
  });
}

/**
 * Disposes every tensor in a tree.
 *
 * @param tree a tree
 */
export function dispose(tree: Tree): void {
  for (const l of leaves(tree)) if (l instanceof Tensor) l.dispose();
}

/**
 * Tensor leaves of a tree (nulls and non-tensors skipped).
 *
 * @param tree a tree
 * @returns the tensors
 */
export function tensors(tree: Tree): Tensor[] {
  return leaves(tree).filter((l): l is Tensor => l instanceof Tensor);
}
