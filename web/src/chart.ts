// The spam-rate chart: spam messages per minute over time, with axes.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export class RateChart {
  readonly el: HTMLElement;
  private plot: uPlot | null = null;
  private points = new Map<number, number>();
  private observer: ResizeObserver;

  constructor(private readonly yLabel = "spam messages / min", private readonly bucketMs = 60000) {
    this.el = document.createElement("div");
    this.el.className = "chart";
    this.el.setAttribute("role", "img");
    this.el.setAttribute("aria-label", yLabel);
    this.observer = new ResizeObserver(() => this.plot?.setSize(this.size()));
    this.observer.observe(this.el);
  }

  private size() {
    return { width: Math.max(240, this.el.clientWidth - 4), height: 160 };
  }

  set(minuteMs: number, messages: number) {
    this.points.set(minuteMs, messages);
  }

  add(atMs: number, messages: number) {
    const m = Math.floor(atMs / this.bucketMs) * this.bucketMs;
    this.points.set(m, (this.points.get(m) ?? 0) + messages);
  }

  get length() {
    return this.points.size;
  }

  draw() {
    const xs = [...this.points.keys()].sort((a, b) => a - b);
    const data: uPlot.AlignedData = [xs, xs.map((x) => this.points.get(x)!)];
    if (this.plot) { this.plot.setData(data); return; }
    if (!xs.length) return;
    const dark = document.documentElement.dataset.theme === "dark";
    const ink = dark ? "#c9cbd6" : "#444";
    const grid = { stroke: dark ? "#333645" : "#e6e6ee" };
    this.plot = new uPlot({
      ...this.size(),
      ms: 1,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
      axes: [
        { stroke: ink, grid, label: "time (your time zone)" },
        { stroke: ink, grid, label: this.yLabel, size: 64 },
      ],
      series: [
        {},
        { label: this.yLabel, stroke: "#d33", fill: "rgba(221,51,51,.25)", paths: uPlot.paths.bars!({ size: [0.9, 40] }), points: { show: false } },
      ],
    }, data, this.el);
  }

  destroy() {
    this.observer.disconnect();
    this.plot?.destroy();
  }
}
