// The live price chart: an SVG line of the last points of the demo feed.

import { $, show } from "./dom.js";

const MAX_POINTS = 60;
const WIDTH = 600;
const HEIGHT = 200;
const PAD = 12;

export class PriceChart {
  constructor(live, { topic = "tidings.demo.prices" } = {}) {
    this.live = live;
    this.topic = topic;
    this.points = [];
    this.received = 0;
  }

  mount() {
    show($("prices"));
    this.drawGrid();
    this.live.follow(this.topic, (tick) => this.add(tick), { history: false });
  }

  add(tick) {
    const price = Number(tick && tick.price);
    if (!Number.isFinite(price)) return;
    this.points.push(price);
    if (this.points.length > MAX_POINTS) this.points.shift();
    this.received += 1;
    this.draw();
  }

  drawGrid() {
    const grid = document.querySelector(".chart-grid");
    const lines = [1, 2, 3].map((i) => {
      const y = (HEIGHT / 4) * i;
      return `<line x1="0" x2="${WIDTH}" y1="${y}" y2="${y}" />`;
    });
    grid.innerHTML = lines.join("");
  }

  draw() {
    const chart = $("chart");
    const points = this.points;
    const min = Math.min(...points);
    const max = Math.max(...points);
    const span = max - min;
    // Spread the points over the whole width; a single point is a flat line.
    const step = WIDTH / Math.max(points.length - 1, 1);
    const y = (price) => (span ? PAD + (HEIGHT - 2 * PAD) * (1 - (price - min) / span) : HEIGHT / 2);
    const xy = points.length === 1 ? [[0, y(points[0])], [WIDTH, y(points[0])]] : points.map((price, i) => [i * step, y(price)]);
    const line = xy.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    const last = xy[xy.length - 1];
    chart.querySelector(".chart-line").setAttribute("d", line);
    chart.querySelector(".chart-area").setAttribute("d", `${line} L${last[0].toFixed(1)},${HEIGHT} L0,${HEIGHT} Z`);
    chart.dataset.points = String(this.received);
    show($("chart-empty"), false);
    $("chart-max").textContent = max.toFixed(2);
    $("chart-min").textContent = min.toFixed(2);
    const price = points[points.length - 1];
    const change = ((price - points[0]) / points[0]) * 100;
    $("chart-last").textContent = price.toFixed(2);
    const badge = $("chart-change");
    badge.textContent = `${change >= 0 ? "+" : ""}${change.toFixed(2)}%`;
    badge.dataset.trend = change >= 0 ? "up" : "down";
  }
}
