/**
 * The server's change stream (`GET primehub/api/events`, server-sent events), read with
 * `fetch` through `ServerConnection.makeRequest` so that it carries Jupyter's auth (an
 * EventSource cannot send the token header).
 */

import { IDisposable } from '@lumino/disposable';
import { ServerConnection } from '@jupyterlab/services';

import { apiUrl } from './request';

/** One event of the stream (see docs/internals.md "Change events"). */
export interface IChangeEvent {
  type: 'ready' | 'deployment' | 'groups' | string;
  action?: 'created' | 'changed' | 'deleted';
  id?: string;
  group?: string;
  phase?: string;
  groups?: string[];
}

/**
 * Split a text/event-stream buffer into complete events and the unfinished rest.
 * Comments (heartbeats) and events without JSON data are skipped.
 */
export function parseEvents(buffer: string): {
  events: IChangeEvent[];
  rest: string;
} {
  const text = buffer.replace(/\r\n?/g, '\n');
  const blocks = text.split('\n\n');
  const rest = blocks.pop() ?? '';
  const events: IChangeEvent[] = [];
  for (const block of blocks) {
    const data = block
      .split('\n')
      .filter(line => line.startsWith('data:'))
      .map(line => line.slice(5).replace(/^ /, ''))
      .join('\n');
    if (!data) {
      continue;
    }
    try {
      const event = JSON.parse(data);
      if (event && typeof event.type === 'string') {
        events.push(event as IChangeEvent);
      }
    } catch {
      // not ours: ignore
    }
  }
  return { events, rest };
}

/**
 * A connection to the change stream that reconnects (with backoff) when it breaks.
 * `connected` is true from the `ready` event until the stream fails.
 */
export class ChangeStream implements IDisposable {
  constructor(options: ChangeStream.IOptions) {
    this._onEvent = options.onEvent;
    this._onState = options.onState ?? (() => undefined);
    this._settings = options.settings ?? ServerConnection.makeSettings();
    void this._run();
  }

  get connected(): boolean {
    return this._connected;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._abort?.abort();
    clearTimeout(this._timer);
    this._setConnected(false);
  }

  private async _run(): Promise<void> {
    let wait = 1000;
    while (!this._disposed) {
      try {
        await this._read();
        wait = 1000; // a stream that ended cleanly (server restart): reconnect soon
      } catch {
        wait = Math.min(30000, wait * 2);
      }
      this._setConnected(false);
      if (this._disposed) {
        return;
      }
      await new Promise(resolve => {
        this._timer = setTimeout(resolve, wait);
      });
    }
  }

  private async _read(): Promise<void> {
    this._abort = new AbortController();
    const response = await ServerConnection.makeRequest(
      apiUrl('events', this._settings),
      {
        headers: { Accept: 'text/event-stream' },
        signal: this._abort.signal
      },
      this._settings
    );
    if (!response.ok || !response.body) {
      throw new Error(`events: ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      const { events, rest } = parseEvents(buffer);
      buffer = rest;
      for (const event of events) {
        if (event.type === 'ready') {
          this._setConnected(true);
        }
        this._onEvent(event);
      }
    }
  }

  private _setConnected(connected: boolean): void {
    if (connected !== this._connected) {
      this._connected = connected;
      this._onState(connected);
    }
  }

  private _onEvent: (event: IChangeEvent) => void;
  private _onState: (connected: boolean) => void;
  private _settings: ServerConnection.ISettings;
  private _abort: AbortController | null = null;
  private _timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private _connected = false;
  private _disposed = false;
}

export namespace ChangeStream {
  export interface IOptions {
    onEvent: (event: IChangeEvent) => void;
    /** Told when the stream goes live (true) or breaks (false). */
    onState?: (connected: boolean) => void;
    settings?: ServerConnection.ISettings;
  }
}
