/** SVG charts of the experiment: one panel per metric against training steps, one line per configuration. */
export interface Line {
  name: string;
  points: Array<[number, number]>;
}

const COLORS = ['#1b6ac9', '#e03131', '#2b8a3e', '#7048e8', '#f59f00', '#868e96', '#c2255c', '#0c8599'];

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Panels side by side sharing the legend; `log` panels use a log y axis. */
export function stepCharts(title: string, subtitle: string, panels: { title: string; log: boolean; lines: Line[] }[]): string {
  const PW = 380;
  const PH = 300;
  const m = { left: 56, right: 16, top: 70, bottom: 44 };
  const legend = 200;
  const W = panels.length * (PW + m.left + m.right) + legend;
  const H = PH + m.top + m.bottom;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.left}" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="${m.left}" y="40" fill="#555">${escape(subtitle)}</text>`,
  ];
  panels.forEach((panel, pi) => {
    const x0 = pi * (PW + m.left + m.right) + m.left;
    const xs = panel.lines.flatMap((l) => l.points.map((p) => p[0]));
    const ys = panel.lines.flatMap((l) => l.points.map((p) => p[1])).filter((v) => Number.isFinite(v) && (!panel.log || v > 0));
    const xMax = Math.max(...xs, 1);
    let yMin = panel.log ? Math.min(...ys) : 0;
    let yMax = Math.max(...ys) * (panel.log ? 1.2 : 1.05);
    if (panel.log) yMin = Math.max(yMin / 1.2, yMax / 1e4);
    if (!(yMax > yMin)) yMax = yMin + 1;
    const fy = (v: number) => (panel.log ? Math.log10(Math.max(v, yMin)) : v);
    const px = (x: number) => x0 + (x / xMax) * PW;
    const py = (v: number) => m.top + PH - ((fy(v) - fy(yMin)) / (fy(yMax) - fy(yMin))) * PH;
    out.push(`<text x="${x0}" y="${m.top - 10}" font-weight="bold">${escape(panel.title)}</text>`);
    out.push(`<rect x="${x0}" y="${m.top}" width="${PW}" height="${PH}" fill="none" stroke="#ccc"/>`);
    const ticks: number[] = [];
    if (panel.log) {
      for (let e = Math.floor(Math.log10(yMin)); e <= Math.ceil(Math.log10(yMax)); e++)
        for (const k of [1, 2, 5]) if (k * 10 ** e >= yMin && k * 10 ** e <= yMax) ticks.push(k * 10 ** e);
    } else {
      const step = 10 ** Math.floor(Math.log10(yMax / 4 || 1));
      const unit = [1, 2, 5, 10].map((k) => k * step).find((u) => yMax / u <= 6) ?? step * 10;
      for (let v = 0; v <= yMax; v += unit) ticks.push(v);
    }
    for (const v of ticks) {
      out.push(`<line x1="${x0}" x2="${x0 + PW}" y1="${py(v)}" y2="${py(v)}" stroke="#eee"/>`);
      out.push(`<text x="${x0 - 6}" y="${py(v) + 4}" text-anchor="end" fill="#555">${+v.toPrecision(3)}</text>`);
    }
    for (let i = 0; i <= 4; i++) {
      const x = Math.round((xMax * i) / 4);
      out.push(`<text x="${px(x)}" y="${m.top + PH + 16}" text-anchor="middle" fill="#555">${x}</text>`);
    }
    out.push(`<text x="${x0 + PW / 2}" y="${H - 10}" text-anchor="middle">step</text>`);
    panel.lines.forEach((line, li) => {
      const d = line.points
        .filter((p) => Number.isFinite(p[1]))
        .map((p, i) => `${i ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`)
        .join('');
      out.push(`<path d="${d}" fill="none" stroke="${COLORS[li % COLORS.length]}" stroke-width="1.6"/>`);
    });
  });
  const lx = W - legend + 8;
  (panels[0]?.lines ?? []).forEach((line, li) => {
    const y = m.top + 10 + li * 20;
    out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${y}" y2="${y}" stroke="${COLORS[li % COLORS.length]}" stroke-width="3"/>`);
    out.push(`<text x="${lx + 28}" y="${y + 4}">${escape(line.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
