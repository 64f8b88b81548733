// Study path: "what does the learning rate do?" — MiniMind's get_lr (cosine from lr to lr/10, no
// warmup) next to nanoGPT's warmup + cosine, as an SVG chart.
//
//   deno run -A examples/plot_lr.ts [out/get_lr.svg]
import { getLr, warmupCosine } from "../mod.ts";
import { lineChartSvg } from "../train/plot.ts";

const out = Deno.args[0] ?? "out/get_lr.svg";
const total = 1000, lr = 5e-4;
const steps = Array.from({ length: total + 1 }, (_, i) => i);
const nano = warmupCosine({ peak: lr, warmupSteps: 100, decaySteps: total });
const svg = lineChartSvg(
  [
    { name: "MiniMind get_lr", x: steps, y: steps.map((s) => getLr(s, total, lr)) },
    { name: "warmup + cosine", x: steps, y: steps.map(nano) },
  ],
  { title: `learning rate over ${total} steps (lr ${lr})`, xLabel: "step", yLabel: "lr" },
);
await Deno.mkdir(out.split("/").slice(0, -1).join("/") || ".", { recursive: true });
await Deno.writeTextFile(out, svg);
for (const s of [0, 1, 250, 500, 750, 1000]) {
  console.log(`step ${String(s).padStart(4)}: get_lr ${getLr(s, total, lr).toExponential(4)}`);
}
console.log(`wrote ${out}`);
