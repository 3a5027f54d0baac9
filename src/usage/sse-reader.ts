import { StringDecoder } from 'node:string_decoder';

/**
 * Server-sent events, read incrementally from a copy of the bytes the caller
 * receives: each complete event's `data` (its lines joined by \n) goes to
 * `onData`, once, however the stream was cut into reads. Lines end in \r\n, \n
 * or \r (the spec allows all three). An event larger than `maxEventBytes` stops
 * the reading (`overflowed`): past it, nothing is counted rather than guessed.
 */
export class SseReader {
  #decoder = new StringDecoder('utf8');
  #line = '';
  #data: string[] | null = null;
  #dataLength = 0;
  /** The last read ended on \r: a \n first in the next belongs to it. */
  #afterCR = false;
  overflowed = false;

  constructor(
    private readonly onData: (data: string) => void,
    private readonly maxEventBytes: number,
  ) {}

  write(chunk: Buffer): void {
    if (this.overflowed) return;
    const text = this.#decoder.write(chunk);
    let start = 0;
    if (this.#afterCR && text.length > 0) {
      if (text.charCodeAt(0) === 10) start = 1;
      this.#afterCR = false;
    }
    const breaks = /[\r\n]/g;
    breaks.lastIndex = start;
    for (let m = breaks.exec(text); m !== null; m = breaks.exec(text)) {
      const i = m.index;
      this.#endLine(this.#line + text.slice(start, i));
      this.#line = '';
      if (text.charCodeAt(i) === 13) {
        if (i + 1 === text.length) this.#afterCR = true;
        else if (text.charCodeAt(i + 1) === 10) breaks.lastIndex = i + 2;
      }
      start = breaks.lastIndex;
    }
    this.#line += text.slice(start);
    if (this.#line.length + this.#dataLength > this.maxEventBytes) this.#overflow();
  }

  #endLine(line: string): void {
    if (line === '') {
      if (this.#data !== null) this.onData(this.#data.join('\n'));
      this.#data = null;
      this.#dataLength = 0;
      return;
    }
    if (!line.startsWith('data')) return; // comments, event:, id:, retry:
    let value: string;
    if (line.length === 4) value = '';
    else if (line.charCodeAt(4) === 58) value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5); // "data:" and one optional space
    else return; // a field named data-something
    (this.#data ??= []).push(value);
    this.#dataLength += value.length;
  }

  #overflow(): void {
    this.overflowed = true;
    this.#line = '';
    this.#data = null;
  }
}
