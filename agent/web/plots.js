/* The Learning view's plots, drawn as inline SVG (no libraries, no innerHTML). Each draw
   function takes the element to draw into and the data, and replaces what it held. */

const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d"];

const PLOT = { width: 400, height: 260, left: 52, right: 14, top: 18, bottom: 48 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

function emptyPlot(container, message) {
  const p = document.createElement("p");
  p.className = "plot-empty muted";
  p.textContent = message;
  container.replaceChildren(p);
}

/* Round tick values covering [lo, hi]. */
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/* An empty chart: frame, grid, y ticks, axis labels; returns the svg and its scales. */
function frame(container, { title, xLabel, yLabel, yMin, yMax, yFormat }) {
  const { width, height, left, right, top, bottom } = PLOT;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": title,
  });
  root.append(svg("title", {}, title));
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const y = (v) => top + plotH - ((v - yMin) / (yMax - yMin || 1)) * plotH;
  const axes = svg("g", { class: "axes" });
  for (const t of ticks(yMin, yMax)) {
    axes.append(svg("line", { x1: left, x2: left + plotW, y1: y(t), y2: y(t), class: "grid" }));
    axes.append(
      svg("text", { x: left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, yFormat(t)),
    );
  }
  axes.append(svg("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }));
  axes.append(
    svg("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, class: "axis" }),
  );
  axes.append(
    svg("text", { x: left + plotW / 2, y: height - 6, class: "axis-label x-label" }, xLabel),
  );
  axes.append(
    svg(
      "text",
      {
        x: -(top + plotH / 2),
        y: 14,
        transform: "rotate(-90)",
        class: "axis-label y-label",
      },
      yLabel,
    ),
  );
  root.append(axes);
  container.replaceChildren(root);
  return { root, y, left, top, plotW, plotH };
}

const percent = (v) => `${Math.round(v * 100)}%`;

/* Bars: the share of thumbs-up among each version's rated answers. */
export function drawApproval(container, rows) {
  if (!rows.length) {
    emptyPlot(container, "No rated answers yet.");
    return;
  }
  const chart = frame(container, {
    title: "Approval rate per version",
    xLabel: "version",
    yLabel: "share of thumbs-up",
    yMin: 0,
    yMax: 1,
    yFormat: percent,
  });
  const slot = chart.plotW / rows.length;
  const barW = Math.min(64, slot * 0.6);
  rows.forEach((row, i) => {
    const cx = chart.left + slot * (i + 0.5);
    const top = chart.y(row.rate);
    const bottom = chart.y(0);
    const bar = svg("rect", {
      x: cx - barW / 2,
      y: top,
      width: barW,
      height: Math.max(bottom - top, 0.5),
      class: "bar",
      fill: COLORS[i % COLORS.length],
      "data-version": row.version,
    });
    bar.append(svg("title", {}, `${row.version}: ${row.up} up, ${row.down} down`));
    chart.root.append(bar);
    const label = `${percent(row.rate)} (${row.up}/${row.up + row.down})`;
    chart.root.append(svg("text", { x: cx, y: top - 5, class: "value" }, label));
    chart.root.append(svg("text", { x: cx, y: bottom + 16, class: "tick category" }, row.version));
  });
}

/* Lines on shared axes: series = [{name, points: [{x, y}]}]. */
function drawLines(container, series, options) {
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  let xMin = Math.min(...xs);
  let xMax = Math.max(...xs);
  if (xMax === xMin) {
    xMin = xMin >= 0 ? Math.max(0, xMin - 1) : xMin - 1;
    xMax += 1;
  }
  let yMin = options.yMin ?? Math.min(...ys);
  let yMax = options.yMax ?? Math.max(...ys);
  if (yMax === yMin) {
    yMin -= 0.5;
    yMax += 0.5;
  }
  // round the free ends out to tick values
  const yTicks = ticks(yMin, yMax);
  const stepY = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
  if (options.yMin === undefined) yMin = Math.floor(yMin / stepY) * stepY;
  if (options.yMax === undefined) yMax = Math.ceil(yMax / stepY) * stepY;
  const chart = frame(container, { ...options, yMin, yMax });
  const x = (v) => chart.left + ((v - xMin) / (xMax - xMin)) * chart.plotW;
  const base = chart.top + chart.plotH;
  const xTicks = ticks(xMin, xMax, 6).filter((t) => !options.integerX || Number.isInteger(t));
  for (const t of xTicks) {
    chart.root.append(svg("line", { x1: x(t), x2: x(t), y1: base, y2: base + 4, class: "axis" }));
    chart.root.append(svg("text", { x: x(t), y: base + 16, class: "tick category" }, String(t)));
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const group = svg("g", { class: "series", "data-name": s.name });
    const d = s.points
      .map((p, j) => `${j ? "L" : "M"}${x(p.x).toFixed(1)},${chart.y(p.y).toFixed(1)}`)
      .join(" ");
    group.append(svg("path", { d, class: "line", stroke: color, fill: "none" }));
    if (s.points.length <= 40) {
      for (const p of s.points) {
        const dot = svg("circle", { cx: x(p.x), cy: chart.y(p.y), r: 3, fill: color, class: "dot" });
        dot.append(svg("title", {}, p.label || `${s.name}: ${options.yFormat(p.y)} at ${p.x}`));
        group.append(dot);
      }
    }
    chart.root.append(group);
  });
  if (series.length > 1 || options.legend) {
    const legend = svg("g", { class: "legend" });
    series.forEach((s, i) => {
      const lx = chart.left + chart.plotW - 8;
      const ly = chart.top + 6 + i * 16;
      const color = s.color || COLORS[i % COLORS.length];
      legend.append(svg("rect", { x: lx - 10, y: ly - 5, width: 10, height: 10, fill: color }));
      legend.append(svg("text", { x: lx - 14, y: ly + 4, class: "legend-text" }, s.name));
    });
    chart.root.append(legend);
  }
  return chart;
}

/* Lines: the training loss of the latest runs (as many as there are colours). `live`, the
   {run, losses} of a run still going, replaces that run's losses when it has more. */
export function drawLosses(container, finished, live) {
  const runs = finished.map((r) => ({ ...r }));
  if (live && live.losses.length) {
    const known = runs.find((r) => r.run === live.run);
    if (known) {
      if (live.losses.length >= (known.losses || []).length) known.losses = live.losses;
    } else {
      runs.push({ run: live.run, version: null, status: "running", losses: live.losses });
    }
  }
  const series = runs
    .filter((r) => r.losses && r.losses.length)
    .sort((a, b) => a.run - b.run)
    .slice(-COLORS.length)
    .map((r) => ({
      name: `run ${r.run}${r.version ? ` → ${r.version}` : ""}`,
      points: r.losses.map((l) => ({ x: l.step, y: l.loss })),
    }));
  if (!series.length) {
    emptyPlot(container, "No training runs yet.");
    return;
  }
  drawLines(container, series, {
    title: "Training loss per run",
    xLabel: "training step",
    yLabel: "loss",
    yFormat: (v) => String(Number(v.toPrecision(3))),
    integerX: true,
    legend: true,
  });
}

/* A line: a `learnloop bench` run's accuracy after each learning cycle. */
export function drawBench(container, points) {
  if (!points.length) {
    emptyPlot(container, "The benchmark has no points.");
    return;
  }
  const chart = drawLines(
    container,
    [
      {
        name: "accuracy",
        points: points.map((p) => ({
          x: p.interactions,
          y: p.accuracy,
          label: `${p.version}: ${percent(p.accuracy)} after ${p.interactions} interactions`,
        })),
      },
    ],
    {
      title: "Benchmark accuracy",
      xLabel: "interactions (feedback given)",
      yLabel: "accuracy",
      yMin: 0,
      yMax: 1,
      yFormat: percent,
    },
  );
  return chart;
}
