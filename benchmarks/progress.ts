/** A one-line progress bar on stderr (only when stderr is a terminal or FORCE_PROGRESS is set). */
export class Progress {
  private done = 0;
  private readonly live = process.stderr.isTTY || !!process.env.FORCE_PROGRESS;
  private lastLog = 0;

  constructor(private readonly total: number) {}

  step(label: string): void {
    this.done++;
    const width = 30;
    const filled = Math.round((this.done / this.total) * width);
    const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.done}/${this.total} ${label}`;
    if (this.live) process.stderr.write(`\r${line.padEnd(100).slice(0, 100)}`);
    else if (Date.now() - this.lastLog > 10_000) {
      process.stderr.write(line + '\n');
      this.lastLog = Date.now();
    }
  }

  end(): void {
    if (this.live) process.stderr.write('\r' + ' '.repeat(100) + '\r');
  }
}
