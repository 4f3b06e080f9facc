/** Log lines for the Logs tab: a bounded buffer and a follower over the streaming endpoint. */

import { PrimeHubAPI } from './api';

/** The Logs tab keeps (and first asks for) this many lines. */
export const LOG_TAIL = 2000;

/** Splits a stream of text chunks into whole lines; a partial last line waits for the next. */
export class LineSplitter {
  push(chunk: string): string[] {
    this._rest += chunk;
    const parts = this._rest.split('\n');
    this._rest = parts.pop() ?? '';
    return parts.map(line => (line.endsWith('\r') ? line.slice(0, -1) : line));
  }

  /** Whatever is left once the stream ended. */
  flush(): string[] {
    const rest = this._rest;
    this._rest = '';
    return rest ? [rest] : [];
  }

  private _rest = '';
}

/** The last `max` lines, oldest first. */
export class LogBuffer {
  constructor(readonly max: number = LOG_TAIL) {}

  get lines(): readonly string[] {
    return this._lines;
  }

  /** How many lines were dropped off the top since the last `clear()`. */
  get dropped(): number {
    return this._dropped;
  }

  append(lines: readonly string[]): void {
    if (lines.length === 0) {
      return;
    }
    const all = this._lines.concat(lines);
    const over = all.length - this.max;
    if (over > 0) {
      this._dropped += over;
      this._lines = all.slice(over);
    } else {
      this._lines = all;
    }
  }

  replace(lines: readonly string[]): void {
    this.clear();
    this.append(lines);
  }

  clear(): void {
    this._lines = [];
    this._dropped = 0;
  }

  private _lines: string[] = [];
  private _dropped = 0;
}

/**
 * Read a streaming `Response` to its end, calling `onLines` with each batch of whole lines.
 *
 * Resolves when the server ends the stream or `signal` aborts it; an abort is not an error.
 */
export async function readLines(
  response: Response,
  onLines: (lines: string[]) => void,
  signal?: AbortSignal
): Promise<void> {
  if (!response.body) {
    const lines = new LineSplitter();
    onLines([...lines.push(await response.text()), ...lines.flush()]);
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const splitter = new LineSplitter();
  const cancel = () => {
    void reader.cancel().catch(() => undefined);
  };
  signal?.addEventListener('abort', cancel);
  try {
    for (;;) {
      if (signal?.aborted) {
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      const lines = splitter.push(decoder.decode(value, { stream: true }));
      if (lines.length && !signal?.aborted) {
        onLines(lines);
      }
    }
    const rest = splitter.push(decoder.decode());
    rest.push(...splitter.flush());
    if (rest.length && !signal?.aborted) {
      onLines(rest);
    }
  } catch (error) {
    if (!signal?.aborted) {
      throw error;
    }
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}

/** Whether an error is what aborting a fetch throws (directly or wrapped by JupyterLab). */
export function isAbort(error: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) {
    return true;
  }
  return error instanceof Error && error.name === 'AbortError';
}

/**
 * Follow one deployment's logs (`logs?follow=1`): the last `tail` lines, then new ones.
 *
 * `stop()` aborts the request, which closes the connection, which makes the server stop
 * tailing the files: nothing keeps running after the tab closes.
 */
export class LogFollower {
  constructor(
    private readonly _api: PrimeHubAPI,
    readonly deploymentId: string,
    readonly replica: string | undefined,
    private readonly _onLines: (lines: string[]) => void
  ) {}

  /** Whether the stream is open. */
  get active(): boolean {
    return this._controller !== null;
  }

  /** Open the stream; resolves when it ends (server closed it, `stop()`, or an error). */
  async start(tail: number = LOG_TAIL): Promise<void> {
    this.stop();
    const controller = new AbortController();
    this._controller = controller;
    try {
      const response = await this._api.followLogs(this.deploymentId, {
        replica: this.replica,
        tail,
        signal: controller.signal
      });
      await readLines(response, this._onLines, controller.signal);
    } catch (error) {
      if (!isAbort(error, controller.signal)) {
        throw error;
      }
    } finally {
      if (this._controller === controller) {
        this._controller = null;
      }
    }
  }

  /** Close the stream (safe to call at any time, any number of times). */
  stop(): void {
    const controller = this._controller;
    this._controller = null;
    controller?.abort();
  }

  private _controller: AbortController | null = null;
}
