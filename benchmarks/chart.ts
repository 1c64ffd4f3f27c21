/** A small SVG line chart: throughput against tokens (log scale), one line per implementation, roofline dashed. */
export interface Series {
  name: string;
  points: Array<[number, number]>; // [tokens, GFLOP/s]
  dashed?: boolean;
}

const COLORS = ['#1b6ac9', '#4aa3ff', '#d9480f', '#2b8a3e', '#7048e8', '#868e96'];

export function lineChart(title: string, subtitle: string, series: Series[]): string {
  const W = 760;
  const H = 420;
  const m = { left: 70, right: 190, top: 56, bottom: 50 };
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = [Math.log2(Math.min(...xs)), Math.log2(Math.max(...xs))];
  const yMax = Math.max(...ys) * 1.1;
  const yMin = Math.max(Math.min(...ys) / 1.5, yMax / 1e4);
  const px = (t: number) => m.left + ((Math.log2(t) - x0) / Math.max(1e-9, x1 - x0)) * (W - m.left - m.right);
  const py = (v: number) =>
    H - m.bottom - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * (H - m.top - m.bottom);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.left}" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`);
  out.push(`<text x="${m.left}" y="40" fill="#555">${escape(subtitle)}</text>`);
  for (let e = Math.ceil(Math.log10(yMin)); e <= Math.floor(Math.log10(yMax)); e++)
    for (const mant of [1, 2, 5]) {
      const v = mant * 10 ** e;
      if (v < yMin || v > yMax) continue;
      out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${py(v)}" y2="${py(v)}" stroke="#eee"/>`);
      out.push(`<text x="${m.left - 6}" y="${py(v) + 4}" text-anchor="end" fill="#555">${v}</text>`);
    }
  for (const t of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(`<line x1="${px(t)}" x2="${px(t)}" y1="${m.top}" y2="${H - m.bottom}" stroke="#f3f3f3"/>`);
    out.push(`<text x="${px(t)}" y="${H - m.bottom + 16}" text-anchor="middle" fill="#555">${t}</text>`);
  }
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 12}" text-anchor="middle">tokens per forward</text>`);
  out.push(`<text transform="translate(18 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">GFLOP/s (log)</text>`);
  series.forEach((s, i) => {
    const color = s.dashed ? '#000' : COLORS[i % COLORS.length];
    const pts = s.points
      .slice()
      .sort((a, b) => a[0] - b[0])
      .map(([t, v]) => `${px(t).toFixed(1)},${py(v).toFixed(1)}`)
      .join(' ');
    out.push(
      `<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="${s.dashed ? 1.5 : 2.5}"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    if (!s.dashed) for (const [t, v] of s.points) out.push(`<circle cx="${px(t)}" cy="${py(v)}" r="3" fill="${color}"/>`);
    const ly = m.top + 10 + i * 20;
    out.push(
      `<line x1="${W - m.right + 14}" x2="${W - m.right + 40}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    out.push(`<text x="${W - m.right + 46}" y="${ly + 4}">${escape(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
