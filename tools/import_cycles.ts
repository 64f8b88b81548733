/**
 * Fails when the source has an import cycle. Only imports that run count: `import type`,
 * `export type` and imports whose every name is `type` are erased by TypeScript, and a dynamic
 * `import()` loads later, so neither can form a cycle at load time.
 *
 *   deno run --allow-read tools/import_cycles.ts            # every .ts file under the root
 *   deno run --allow-read tools/import_cycles.ts --graph nn # also print nn/'s import graph
 * @module
 */
import { dirname, join, normalize, relative } from "node:path";

const SKIP = new Set(["node_modules", ".git", ".cache", "out", "checkpoints"]);
const STATEMENT =
  /^\s*(?:import|export)\s+([\w\s{},*$]*?)\s*from\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']/gm;

/** Every `.ts` file below `dir`, relative to `root`. */
function sources(root: string, dir = root): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory && !SKIP.has(e.name)) out.push(...sources(root, p));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(relative(root, p));
  }
  return out.sort();
}

/** Whether an import/export clause brings in values (not only types). */
function runsCode(clause: string): boolean {
  if (/^type\s/.test(clause)) return false; // import type / export type
  const braces = /^\{([^}]*)\}$/.exec(clause.trim());
  if (!braces) return true; // default, namespace or `*` (or a default beside named ones)
  const names = braces[1].split(",").map((x) => x.trim()).filter(Boolean);
  return names.length === 0 || names.some((x) => !x.startsWith("type "));
}

/**
 * The runtime import graph: file → the files it imports for their values.
 *
 * @param root the repository root
 * @returns the edges
 */
export function importGraph(root: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(root)) {
    const text = Deno.readTextFileSync(join(root, file));
    const deps: string[] = [];
    for (const m of text.matchAll(STATEMENT)) {
      const spec = m[2] ?? m[3];
      if (!spec.startsWith(".")) continue;
      if (m[2] !== undefined && !runsCode(m[1])) continue;
      deps.push(normalize(join(dirname(file), spec)));
    }
    graph.set(file, [...new Set(deps)].sort());
  }
  return graph;
}

/**
 * The cycles of a graph (one per strongly connected component, as a path that closes).
 *
 * @param graph file → imported files
 * @returns each cycle as a list of files, the first repeated at the end
 */
export function cycles(graph: Map<string, string[]>): string[][] {
  // Tarjan's strongly connected components, then one closed path inside each
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], on = new Set<string>(), comps: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index), low.set(v, index++), stack.push(v), on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) visit(w), low.set(v, Math.min(low.get(v)!, low.get(w)!));
      else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) !== idx.get(v)) return;
    const comp: string[] = [];
    for (let w = ""; w !== v;) (w = stack.pop()!), on.delete(w), comp.push(w);
    const selfLoop = (graph.get(v) ?? []).includes(v);
    if (comp.length > 1 || selfLoop) comps.push(comp);
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return comps.map((comp) => closedPath(graph, new Set(comp), comp.sort()[0]));
}

function closedPath(graph: Map<string, string[]>, inComp: Set<string>, start: string): string[] {
  // breadth-first from start back to start, inside the component
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!inComp.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let u = v; u !== start; u = prev.get(u)!) path.splice(1, 0, u);
        return [...path, start];
      }
      if (!prev.has(w)) prev.set(w, v), queue.push(w);
    }
  }
  return [start, start];
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname;
  const graph = importGraph(root);
  const g = Deno.args.indexOf("--graph");
  if (g >= 0) {
    const under = Deno.args[g + 1] + "/";
    for (const [f, deps] of graph) {
      if (!f.startsWith(under) || f.endsWith("_test.ts")) continue;
      const inside = deps.filter((d) => d.startsWith(under)).map((d) => relative(under, d));
      console.log(`${relative(under, f)} → ${inside.join(", ") || "(none)"}`);
    }
  }
  const found = cycles(graph);
  for (const c of found) console.error(`Import cycle: ${c.join(" → ")}`);
  if (found.length) {
    console.error(`${found.length} import cycle(s) in ${graph.size} files`);
    Deno.exit(1);
  }
  console.log(`No import cycles in ${graph.size} files`);
}
