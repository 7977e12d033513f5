// A one-line progress bar on stderr (redrawn in a terminal, a line per 10% otherwise).
export class Progress {
  private lastPct = -1;
  private readonly start = performance.now();
  constructor(private readonly label: string, private readonly total: number, private readonly unit = '') {}

  update(done: number, extra = ''): void {
    const pct = this.total > 0 ? Math.floor((100 * done) / this.total) : 100;
    const tty = process.stderr.isTTY;
    if (!tty && pct < this.lastPct + 10 && done < this.total) return;
    this.lastPct = pct;
    const width = 28;
    const fill = Math.round((width * pct) / 100);
    const secs = (performance.now() - this.start) / 1e3;
    const line = `${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${String(pct).padStart(3)}% ${done}/${this.total}${this.unit} ${secs.toFixed(1)}s ${extra}`;
    if (tty) process.stderr.write(`\r${line}\x1b[K${done >= this.total ? '\n' : ''}`);
    else process.stderr.write(`${line}\n`);
  }
}
