/**
 * A safe arithmetic evaluator: a recursive-descent parser over a small grammar, never `eval` or
 * `Function`. It is the body of the built-in `calculate_math` tool.
 *
 *   expr   := term (("+" | "-") term)*
 *   term   := unary (("*" | "/" | "%") unary)*
 *   unary  := ("+" | "-") unary | power
 *   power  := atom (("^" | "**") unary)?          right-associative, binds tighter than unary minus
 *   atom   := number | name | name "(" args ")" | "(" expr ")"
 *
 * Names: `pi`, `e`; functions `sqrt abs exp ln log log10 log2 sin cos tan floor ceil round min max
 * pow`. `×` `÷` `−` and full-width digits/brackets are accepted; a comma followed by exactly three
 * digits is a thousands separator (`1,234`), so write `max(1, 234)` with a space.
 * @module
 */

/** A syntax or domain error, with the offset in the expression where it was found. */
export class CalcError extends Error {
  /**
   * @param message what is wrong
   * @param offset character offset in the expression
   */
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "CalcError";
  }
}

const CONSTANTS: Record<string, number> = { pi: Math.PI, e: Math.E };

const FUNCTIONS: Record<string, { arity: [number, number]; fn: (...x: number[]) => number }> = {
  sqrt: { arity: [1, 1], fn: Math.sqrt },
  abs: { arity: [1, 1], fn: Math.abs },
  exp: { arity: [1, 1], fn: Math.exp },
  ln: { arity: [1, 1], fn: Math.log },
  log: { arity: [1, 2], fn: (x, b) => b === undefined ? Math.log10(x) : Math.log(x) / Math.log(b) },
  log10: { arity: [1, 1], fn: Math.log10 },
  log2: { arity: [1, 1], fn: Math.log2 },
  sin: { arity: [1, 1], fn: Math.sin },
  cos: { arity: [1, 1], fn: Math.cos },
  tan: { arity: [1, 1], fn: Math.tan },
  floor: { arity: [1, 1], fn: Math.floor },
  ceil: { arity: [1, 1], fn: Math.ceil },
  round: {
    arity: [1, 2],
    fn: (x, d) => (d === undefined ? Math.round(x) : Math.round(x * 10 ** d) / 10 ** d),
  },
  min: { arity: [1, 64], fn: Math.min },
  max: { arity: [1, 64], fn: Math.max },
  pow: { arity: [2, 2], fn: Math.pow },
};

const MAX_LENGTH = 1000;
const MAX_DEPTH = 100;

/** Maps look-alike characters (×, ÷, −, full-width forms) to ASCII, keeping offsets. */
function normalize(s: string): string {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === "×" || ch === "·") out += "*";
    else if (ch === "÷") out += "/";
    else if (ch === "−" || ch === "–") out += "-";
    else if (c >= 0xff01 && c <= 0xff5e) out += String.fromCharCode(c - 0xfee0);
    else out += ch;
  }
  return out;
}

class Parser {
  #i = 0;
  #depth = 0;
  constructor(readonly src: string) {}

  parse(): number {
    const v = this.#expr();
    this.#ws();
    if (this.#i < this.src.length) {
      throw new CalcError(`Unexpected '${this.src[this.#i]}' at offset ${this.#i}`, this.#i);
    }
    return v;
  }

  #ws(): void {
    while (this.#i < this.src.length && /\s/.test(this.src[this.#i])) this.#i++;
  }

  #peek(): string {
    this.#ws();
    return this.src[this.#i] ?? "";
  }

  #eat(tok: string): boolean {
    this.#ws();
    if (this.src.startsWith(tok, this.#i)) {
      this.#i += tok.length;
      return true;
    }
    return false;
  }

  #nest<T>(f: () => T): T {
    if (++this.#depth > MAX_DEPTH) {
      throw new CalcError(`Expression nested deeper than ${MAX_DEPTH} levels`, this.#i);
    }
    try {
      return f();
    } finally {
      this.#depth--;
    }
  }

  #expr(): number {
    return this.#nest(() => {
      let v = this.#term();
      for (;;) {
        if (this.#eat("+")) v += this.#term();
        else if (this.#eat("-")) v -= this.#term();
        else return v;
      }
    });
  }

  #term(): number {
    let v = this.#unary();
    for (;;) {
      const at = this.#i;
      if (this.#eat("*")) v *= this.#unary();
      else if (this.#eat("/")) {
        const d = this.#unary();
        if (d === 0) throw new CalcError(`Division by zero at offset ${at}`, at);
        v /= d;
      } else if (this.#eat("%")) {
        const d = this.#unary();
        if (d === 0) throw new CalcError(`Modulo by zero at offset ${at}`, at);
        v %= d;
      } else return v;
    }
  }

  #unary(): number {
    return this.#nest(() => {
      if (this.#eat("-")) return -this.#unary();
      if (this.#eat("+")) return this.#unary();
      return this.#power();
    });
  }

  #power(): number {
    const base = this.#atom();
    if (this.#eat("**") || this.#eat("^")) return base ** this.#unary();
    return base;
  }

  #atom(): number {
    const c = this.#peek();
    const at = this.#i;
    if (c === "(") {
      this.#i++;
      const v = this.#expr();
      if (!this.#eat(")")) throw new CalcError(`Missing ')' for '(' at offset ${at}`, this.#i);
      return v;
    }
    const num = /^(\d+(,\d{3}(?!\d))*(\.\d*)?|\.\d+)([eE][+-]?\d+)?/.exec(this.src.slice(this.#i));
    if (num) {
      this.#i += num[0].length;
      return Number(num[0].replaceAll(",", ""));
    }
    const name = /^[A-Za-z_]\w*/.exec(this.src.slice(this.#i));
    if (!name) {
      throw new CalcError(
        c ? `Unexpected '${c}' at offset ${at}` : `Expression ends early at offset ${at}`,
        at,
      );
    }
    const id = name[0].toLowerCase();
    this.#i += name[0].length;
    if (this.#eat("(")) {
      const f = Object.hasOwn(FUNCTIONS, id) ? FUNCTIONS[id] : undefined;
      if (!f) {
        throw new CalcError(
          `Unknown function '${name[0]}' at offset ${at} (known: ${
            Object.keys(FUNCTIONS).join(", ")
          })`,
          at,
        );
      }
      const args: number[] = [];
      if (!this.#eat(")")) {
        do args.push(this.#expr()); while (this.#eat(","));
        if (!this.#eat(")")) throw new CalcError(`Missing ')' after arguments of ${id}`, this.#i);
      }
      if (args.length < f.arity[0] || args.length > f.arity[1]) {
        throw new CalcError(
          `${id} takes ${f.arity[0]}${
            f.arity[1] > f.arity[0] ? `–${f.arity[1]}` : ""
          } argument(s), got ${args.length}`,
          at,
        );
      }
      return f.fn(...args);
    }
    if (Object.hasOwn(CONSTANTS, id)) return CONSTANTS[id];
    throw new CalcError(`Unknown name '${name[0]}' at offset ${at}`, at);
  }
}

/**
 * Evaluates an arithmetic expression.
 *
 * @param expression e.g. "(12 + 30) * 3 / 7" or "sqrt(2)^2"
 * @returns the value (finite)
 * @throws CalcError on a syntax error, a division by zero or a non-finite result
 * @example
 * ```ts
 * import { evaluate } from "./calculator.ts";
 * evaluate("2 + 3 * 4"); // 14
 * evaluate("-2 ^ 2");    // -4
 * ```
 */
export function evaluate(expression: string): number {
  if (expression.length > MAX_LENGTH) {
    throw new CalcError(`Expression longer than ${MAX_LENGTH} characters`, MAX_LENGTH);
  }
  const src = normalize(expression);
  if (!src.trim()) throw new CalcError("Empty expression", 0);
  const v = new Parser(src).parse();
  if (!Number.isFinite(v)) throw new CalcError(`The result is not a finite number (${v})`, 0);
  return v;
}

/**
 * Formats a result the way the tool reports it: integers exactly, others to 12 significant digits
 * without trailing zeros.
 *
 * @param v a finite number
 * @returns its text
 */
export function formatNumber(v: number): string {
  if (Number.isInteger(v) && Math.abs(v) < 1e21) return String(v);
  return String(Number(v.toPrecision(12)));
}
