/**
 * The command line of every entry point — the trainers, `deno task eval`, the demo, the server,
 * the tokenizer and corpus commands — with MiniMind's flag names (`--batch_size 32`,
 * `--from_resume 1`) and one name per concept (`--device` everywhere). Both `--flag value` and
 * `--flag=value` work; an unknown flag or a bad value is an error that lists what is valid, and
 * `--help` prints the table.
 * @module
 */

/** How one flag is read. */
export type FlagSpec =
  | { type: "int"; default: number; help: string; min?: number }
  | { type: "float"; default: number; help: string; min?: number }
  | { type: "string"; default: string; help: string }
  | { type: "optional"; default?: undefined; help: string }
  | { type: "optional_int"; default?: undefined; help: string; min?: number }
  | { type: "choice"; default: string; choices: readonly string[]; help: string }
  | { type: "bool01"; default: boolean; help: string }
  | { type: "switch"; default: boolean; help: string }
  | { type: "alias"; of: string; help: string };

/** A table of flags by name (snake_case, without dashes). */
export type FlagTable = Record<string, FlagSpec>;

/** Parsed values by flag name. */
export type Flags<T extends FlagTable> = {
  [K in keyof T]: T[K] extends { type: "int" | "float" } ? number
    : T[K] extends { type: "bool01" | "switch" } ? boolean
    : T[K] extends { type: "optional" } ? string | undefined
    : T[K] extends { type: "optional_int" } ? number | undefined
    : T[K] extends { type: "alias" } ? never
    : string;
};

/** The devices `--device` accepts: `auto` picks a real GPU when there is one, else the CPU. */
export const DEVICES = ["auto", "cpu", "webgpu"] as const;

/**
 * The `--device` flag every command that computes takes.
 *
 * @param dflt its default (`auto`; the server's is `cpu`)
 * @returns the flag's spec
 */
export function deviceFlag(
  dflt: (typeof DEVICES)[number] = "auto",
): { type: "choice"; default: string; choices: readonly string[]; help: string } {
  return {
    type: "choice",
    default: dflt,
    choices: DEVICES,
    help: "auto = a real GPU if present, else CPU",
  };
}

/** A usage error (exit code 2); the message names the flag and lists the valid choices. */
export class UsageError extends Error {
  /** @param message what is wrong */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function describe(name: string, s: FlagSpec): string {
  if (s.type === "alias") return `  --${name}`.padEnd(34) + ` ${s.help}`;
  const def = s.type === "optional" || s.type === "optional_int"
    ? ""
    : s.type === "bool01"
    ? ` (default ${s.default ? 1 : 0})`
    : s.type === "switch"
    ? ""
    : ` (default ${s.default})`;
  const kind = s.type === "choice"
    ? ` {${s.choices.join("|")}}`
    : s.type === "bool01"
    ? " {0|1}"
    : s.type === "switch"
    ? ""
    : s.type === "int" || s.type === "optional_int"
    ? " N"
    : s.type === "float"
    ? " X"
    : " VALUE";
  return `  --${name}${kind}`.padEnd(34) + ` ${s.help}${def}`;
}

/**
 * The help text of a command.
 *
 * @param command e.g. "deno task pretrain"
 * @param summary one line about the command
 * @param table its flags
 * @returns the text
 */
export function usage(command: string, summary: string, table: FlagTable): string {
  const lines = Object.entries(table).map(([n, s]) => describe(n, s));
  return `${command} [flags]\n\n${summary}\n\nFlags:\n${lines.join("\n")}\n  --help` +
    `${" ".repeat(26)} print this help`;
}

function parseValue(name: string, s: FlagSpec, raw: string): number | string | boolean {
  const bad = (what: string) =>
    new UsageError(`Invalid --${name} ${JSON.stringify(raw)}: expected ${what}`);
  switch (s.type) {
    case "int":
    case "optional_int": {
      const n = Number(raw);
      const min = s.min ?? -Infinity;
      if (!/^[+-]?\d+$/.test(raw.trim()) || n < min) {
        throw bad(min > -Infinity ? `an integer ≥ ${min}` : "an integer");
      }
      return n;
    }
    case "float": {
      const n = Number(raw);
      const min = s.min ?? -Infinity;
      if (raw.trim() === "" || !Number.isFinite(n) || n < min) {
        throw bad(min > -Infinity ? `a number ≥ ${min}` : "a number");
      }
      return n;
    }
    case "choice":
      if (!s.choices.includes(raw)) throw bad(`one of ${s.choices.join(", ")}`);
      return raw;
    case "bool01":
      if (raw === "1" || raw === "true") return true;
      if (raw === "0" || raw === "false") return false;
      throw bad("0 or 1");
    case "switch":
      throw bad("no value (it is a switch)");
    case "alias":
      throw new Error(`--${name} is an alias of --${s.of}: parse the target instead`);
    default:
      return raw;
  }
}

/**
 * Parses `argv` against a flag table.
 *
 * @param argv the arguments (e.g. `Deno.args`)
 * @param table valid flags with defaults
 * @param command the command name for messages (e.g. "deno task pretrain")
 * @returns values for every flag (defaults filled in) and which ones were given
 * @example
 * ```ts
 * import { parseFlags } from "./cli.ts";
 * const { values } = parseFlags(["--epochs", "2"], {
 *   epochs: { type: "int", default: 1, help: "passes over the data", min: 1 },
 * }, "demo");
 * values.epochs; // 2
 * ```
 */
export function parseFlags<T extends FlagTable>(
  argv: readonly string[],
  table: T,
  command: string,
): { values: Flags<T>; given: Set<string>; help: boolean } {
  const values: Record<string, unknown> = {};
  for (const [n, s] of Object.entries(table)) if (s.type !== "alias") values[n] = s.default;
  const given = new Set<string>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      throw new UsageError(
        `Unexpected argument ${JSON.stringify(arg)} for ${command}: flags look like --name value`,
      );
    }
    const eq = arg.indexOf("=");
    let name = (eq >= 0 ? arg.slice(2, eq) : arg.slice(2)).replaceAll("-", "_");
    let spec = table[name];
    if (spec?.type === "alias") [name, spec] = [spec.of, table[spec.of]];
    if (!spec) {
      throw new UsageError(
        `Unknown flag --${name} for ${command}. Valid flags: ${
          Object.entries(table).filter(([, s]) => s.type !== "alias").map(([n]) => `--${n}`)
            .join(", ")
        }`,
      );
    }
    if (spec.type === "switch") {
      if (eq >= 0) values[name] = parseValue(name, { ...spec, type: "bool01" }, arg.slice(eq + 1));
      else values[name] = true;
      given.add(name);
      continue;
    }
    let raw: string;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new UsageError(`Missing a value after --${name}`);
      raw = argv[++i];
    }
    values[name] = parseValue(name, spec, raw);
    given.add(name);
  }
  return { values: values as Flags<T>, given, help };
}

/**
 * Runs a command's `main` and turns its outcome into an exit code: 0 on success, 2 for a usage
 * error (message + hint), 130 when interrupted, 1 for any other error (its message, no stack).
 *
 * @param main the command (returns its exit code)
 * @param command its name for the `--help` hint
 * @returns the exit code
 */
export async function runMain(main: () => Promise<number>, command: string): Promise<number> {
  try {
    return await main();
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\nRun ${command} --help for the flags.`);
      return 2;
    }
    console.error(`error: ${(e as Error).message}`);
    if (Deno.env.get("MINIMIND_DEBUG")) console.error((e as Error).stack);
    return 1;
  }
}
