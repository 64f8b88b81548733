/**
 * The package's `./serve` export: `deno run -A jsr:@minimind/ts/serve --load_from …` runs the
 * server CLI of `serve.ts` (flags: `--help`). For the library, import `createApp` and
 * `startServer` from the package root and `serve.ts`.
 * @module
 */
import { runMain } from "../cli.ts";
import { main } from "../serve.ts";

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), "serve"));
