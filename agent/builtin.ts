/**
 * The built-in tools, all safe (no code evaluation, no network, no files beyond the bundled poetry
 * package): `calculate_math` (the recursive-descent {@link evaluate}), `unit_converter`,
 * `date_calculator` and `poetry_lookup` over the embedded corpus. Names and argument shapes follow
 * MiniMind's mock tools where MiniMind has one (`calculate_math`, `unit_converter`).
 * @module
 */
import type { Tool } from "../serve/tools.ts";
import { loadPoems, type Poem } from "../data/corpus/poetry.ts";
import { evaluate, formatNumber } from "./calculator.ts";

/** `calculate_math {expression}` → the value as text. */
export const calculateMath: Tool = {
  name: "calculate_math",
  description: "Evaluate an arithmetic expression.",
  parameters: {
    type: "object",
    properties: { expression: { type: "string", description: "e.g. (12+30)*3/7" } },
    required: ["expression"],
  },
  run: ({ expression }) => formatNumber(evaluate(String(expression))),
};

// Linear units: factor to the dimension's base unit (m, kg, s, L, m²).
const LINEAR: Record<string, { dim: string; f: number }> = {};
function units(dim: string, table: Record<string, number>): void {
  for (const [names, f] of Object.entries(table)) {
    for (const n of names.split("|")) LINEAR[n] = { dim, f };
  }
}
units("length", {
  "m|meter|meters|米": 1,
  "km|kilometer|kilometers|千米|公里": 1000,
  "cm|centimeter|centimeters|厘米": 0.01,
  "mm|millimeter|millimeters|毫米": 0.001,
  "mi|mile|miles|英里": 1609.344,
  "ft|foot|feet|英尺": 0.3048,
  "in|inch|inches|英寸": 0.0254,
  "yd|yard|yards|码": 0.9144,
  "里": 500,
  "尺": 1 / 3,
  "寸": 1 / 30,
});
units("mass", {
  "kg|kilogram|kilograms|千克|公斤": 1,
  "g|gram|grams|克": 0.001,
  "mg|milligram|milligrams|毫克": 1e-6,
  "t|ton|tonne|吨": 1000,
  "lb|lbs|pound|pounds|磅": 0.45359237,
  "oz|ounce|ounces|盎司": 0.028349523125,
  "斤": 0.5,
  "两": 0.05,
});
units("time", {
  "s|sec|second|seconds|秒": 1,
  "min|minute|minutes|分钟": 60,
  "h|hr|hour|hours|小时": 3600,
  "d|day|days|天": 86400,
  "week|weeks|周": 604800,
});
units("volume", {
  "l|liter|liters|litre|升": 1,
  "ml|milliliter|milliliters|毫升": 0.001,
  "gal|gallon|gallons|加仑": 3.785411784,
});
units("area", {
  "m2|m²|平方米": 1,
  "km2|km²|平方公里": 1e6,
  "ha|hectare|公顷": 1e4,
  "亩": 10000 / 15,
  "acre|acres|英亩": 4046.8564224,
});

const TEMPERATURE: Record<string, { toK: (v: number) => number; fromK: (k: number) => number }> =
  {};
for (
  const [names, toK, fromK] of [
    ["c|celsius|°c|摄氏度", (v: number) => v + 273.15, (k: number) => k - 273.15],
    [
      "f|fahrenheit|°f|华氏度",
      (v: number) => (v - 32) * 5 / 9 + 273.15,
      (k: number) => (k - 273.15) * 9 / 5 + 32,
    ],
    ["k|kelvin|开尔文", (v: number) => v, (k: number) => k],
  ] as const
) for (const n of names.split("|")) TEMPERATURE[n] = { toK, fromK };

/**
 * Converts a value between units of the same dimension.
 *
 * @param value the amount
 * @param from unit name (e.g. "km", "英里", "°F")
 * @param to unit name
 * @returns the converted amount
 * @throws Error naming an unknown unit or a dimension mismatch
 */
export function convertUnit(value: number, from: string, to: string): number {
  const a = from.trim().toLowerCase(), b = to.trim().toLowerCase();
  if (TEMPERATURE[a] || TEMPERATURE[b]) {
    if (!TEMPERATURE[a] || !TEMPERATURE[b]) {
      throw new Error(`cannot convert between '${from}' and '${to}' (temperature and other)`);
    }
    return TEMPERATURE[b].fromK(TEMPERATURE[a].toK(value));
  }
  const ua = LINEAR[a], ub = LINEAR[b];
  if (!ua) throw new Error(`unknown unit '${from}'`);
  if (!ub) throw new Error(`unknown unit '${to}'`);
  if (ua.dim !== ub.dim) {
    throw new Error(`cannot convert ${ua.dim} ('${from}') to ${ub.dim} ('${to}')`);
  }
  return value * ua.f / ub.f;
}

/** `unit_converter {value, from_unit, to_unit}` → "<value> <to_unit>". */
export const unitConverter: Tool = {
  name: "unit_converter",
  description: "Convert a value between units.",
  parameters: {
    type: "object",
    properties: {
      value: { type: "number" },
      from_unit: { type: "string", description: "e.g. km, lb, °F, 斤" },
      to_unit: { type: "string" },
    },
    required: ["value", "from_unit", "to_unit"],
  },
  run: ({ value, from_unit, to_unit }) =>
    `${formatNumber(convertUnit(Number(value), String(from_unit), String(to_unit)))} ${to_unit}`,
};

const DAY_MS = 86_400_000;
const WEEKDAYS = ["星期日", "星期一", "星期二", "星期三", "星期四", "星期五", "星期六"];

/**
 * Parses a `YYYY-MM-DD` calendar date (UTC, proleptic Gregorian).
 *
 * @param s the date text
 * @param field the argument name (for the error)
 * @returns milliseconds since the epoch at 00:00 UTC
 * @throws Error when it is not a valid date
 */
export function parseDate(s: string, field: string): number {
  const m = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(s.trim());
  if (!m) throw new Error(`${field} must be YYYY-MM-DD, got '${s}'`);
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const t = Date.UTC(y, mo - 1, d);
  const back = new Date(t);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d) {
    throw new Error(`${field} '${s}' is not a calendar date`);
  }
  return t;
}

/**
 * Formats an epoch time as `YYYY-MM-DD`.
 *
 * @param t milliseconds since the epoch
 * @returns the UTC date
 */
export function formatDate(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}

/** `date_calculator {date, add_days?, until?}` → the shifted date, or days between two dates. */
export const dateCalculator: Tool = {
  name: "date_calculator",
  description: "Add days to a date, or count the days between two dates.",
  parameters: {
    type: "object",
    properties: {
      date: { type: "string", description: "YYYY-MM-DD" },
      add_days: { type: "integer" },
      until: { type: "string", description: "YYYY-MM-DD" },
    },
    required: ["date"],
  },
  run: ({ date, add_days, until }) => {
    const t = parseDate(String(date), "date");
    if (until !== undefined) {
      const u = parseDate(String(until), "until");
      return JSON.stringify({ days: Math.round((u - t) / DAY_MS) });
    }
    const r = t + Number(add_days ?? 0) * DAY_MS;
    return JSON.stringify({ date: formatDate(r), weekday: WEEKDAYS[new Date(r).getUTCDay()] });
  },
};

/** An index over poems for {@link poetryLookup}. */
export interface PoemIndex {
  /** Poems titled `query`; else whose title contains it or with a line containing it (≤ limit). */
  find(query: string, limit: number): Poem[];
}

/**
 * Builds a lookup index over poems: poems titled exactly `query` if there are any; else titles
 * containing it, then poems with a line containing it.
 *
 * @param poems the poems
 * @returns the index
 */
export function poemIndex(poems: readonly Poem[]): PoemIndex {
  const byTitle = new Map<string, Poem[]>();
  for (const p of poems) {
    const list = byTitle.get(p.title) ?? [];
    list.push(p);
    byTitle.set(p.title, list);
  }
  return {
    find(query, limit) {
      const q = query.trim().replace(/^《|》$/g, "");
      if (!q) return [];
      const exact = byTitle.get(q);
      if (exact) return exact.slice(0, limit);
      const out: Poem[] = [];
      const seen = new Set<Poem>();
      const scan = (pred: (p: Poem) => boolean) => {
        for (const p of poems) {
          if (out.length >= limit) return;
          if (!seen.has(p) && pred(p)) {
            out.push(p);
            seen.add(p);
          }
        }
      };
      scan((p) => p.title.includes(q));
      scan((p) => p.paragraphs.some((l) => l.includes(q)));
      return out;
    },
  };
}

/**
 * `poetry_lookup {query}` over the given poems (default: the whole embedded corpus, loaded on the
 * first call): up to 3 matches as `《title》author：text`, each text cut at 48 characters.
 *
 * @param poems the poems to search (default: the bundled `chinese-poetry` corpus)
 * @returns the tool
 */
export function poetryLookup(poems?: readonly Poem[]): Tool {
  let index: Promise<PoemIndex> | null = poems ? Promise.resolve(poemIndex(poems)) : null;
  return {
    name: "poetry_lookup",
    description: "Find a classical Chinese poem by title or line.",
    parameters: {
      type: "object",
      properties: { query: { type: "string", description: "a title or a line, e.g. 静夜思" } },
      required: ["query"],
    },
    run: async ({ query }) => {
      index ??= loadPoems().then((r) => poemIndex(r.poems));
      const found = (await index).find(String(query), 3);
      if (!found.length) return JSON.stringify({ error: `no poem matches '${query}'` });
      return found.map((p) => {
        const text = p.paragraphs.join("");
        return `《${p.title}》${p.author}：${text.length > 48 ? text.slice(0, 48) + "…" : text}`;
      }).join("\n");
    },
  };
}

/**
 * All built-in tools (what `serve.ts --tools builtin` executes).
 *
 * @param poems poems for `poetry_lookup` (default: the embedded corpus, loaded lazily)
 * @returns calculate_math, unit_converter, date_calculator, poetry_lookup
 */
export function builtinTools(poems?: readonly Poem[]): Tool[] {
  return [calculateMath, unitConverter, dateCalculator, poetryLookup(poems)];
}
