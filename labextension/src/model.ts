/** The state behind the sidebar and the detail views, refreshed by polls that back off. */

import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  IDeployment,
  IMe,
  Phase,
  PrimeHubAPI,
  TRANSITIONAL_PHASES
} from './api';
import { ChangeStream, IChangeEvent } from './events';
import { matchesName } from './format';
import { APIError } from './request';

/** Poll intervals in milliseconds. */
export interface IIntervals {
  /** While a deployment is Deploying or Stopping. */
  active: number;
  /** Right after something changed. */
  idle: number;
  /** The longest wait, reached by doubling while nothing changes (and after errors). */
  max: number;
}

export const DEFAULT_INTERVALS: IIntervals = {
  active: 2000,
  idle: 5000,
  max: 60000
};

/**
 * How long to wait before the next poll: `active` while something moves by itself, `idle`
 * after a change, and twice the previous wait (up to `max`) while nothing changes.
 */
export function nextInterval(
  previous: number,
  state: { transitional: boolean; changed: boolean },
  intervals: IIntervals = DEFAULT_INTERVALS
): number {
  if (state.transitional) {
    return intervals.active;
  }
  if (state.changed) {
    return intervals.idle;
  }
  return Math.min(intervals.max, Math.max(intervals.idle, previous * 2));
}

/** Whether a deployment's phase moves by itself (Deploying, Stopping). */
export function isTransitional(deployment: IDeployment): boolean {
  return TRANSITIONAL_PHASES.has(deployment.status.phase);
}

/** A fingerprint of what the list shows, to tell whether a poll brought anything new. */
export function fingerprint(deployments: IDeployment[]): string {
  return deployments
    .map(
      d =>
        `${d.id}:${d.resourceVersion ?? ''}:${d.status.phase}:${d.status.lastUpdated ?? ''}:` +
        `${d.status.availableReplicas}/${d.status.replicas}:${d.status.message}:` +
        (d.status.predictors ?? []).map(p => p.phase).join(',')
    )
    .join('|');
}

/** A deployment reached Deployed or Failed from another phase. */
export interface IPhaseChange {
  deployment: IDeployment;
  previous: Phase;
}

/** What the list shows instead of deployments, when it cannot show them. */
export type ListState = 'loading' | 'ready' | 'error' | 'server-missing';

/** How long to gather a burst of change events into one reload, in milliseconds. */
const EVENT_COALESCE_MS = 100;

/** The phases worth a notification. */
const SETTLED: ReadonlySet<string> = new Set(['Deployed', 'Failed']);

/**
 * The deployments of the user's groups, as the sidebar lists them.
 *
 * A `Poll` refreshes the list: every 2 s while something is Deploying or Stopping, then
 * slower and slower while nothing changes, with exponential backoff after errors. It stands
 * by while the panel is hidden (and while the browser tab is hidden), except that it keeps
 * watching a rollout in progress so that its notification still arrives.
 *
 * The server's change stream (`events.ts`) triggers a reload as soon as a deployment of the
 * user's groups or a group changes; while the stream is live the poll only runs at `max`, as
 * a safety net, and it takes over again when the stream breaks.
 */
export class DeploymentListModel implements IDisposable {
  constructor(options: DeploymentListModel.IOptions) {
    this.api = options.api;
    this._intervals = options.intervals ?? DEFAULT_INTERVALS;
    this._isVisible = options.isVisible ?? (() => true);
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.load(),
      frequency: {
        interval: this._intervals.active,
        backoff: true,
        max: this._intervals.max
      },
      name: 'primehub-jupyter:deployments',
      standby: () =>
        !this._isVisible() && !this._all.some(isTransitional)
          ? true
          : 'when-hidden'
    });
    if (options.events ?? options.autoStart ?? true) {
      this._stream = new ChangeStream({
        settings: this.api.settings,
        onEvent: event => this._onEvent(event),
        onState: live => this._onLive(live)
      });
    }
  }

  readonly api: PrimeHubAPI;

  /** Whether the server's change stream is connected (changes show at once). */
  get live(): boolean {
    return this._live;
  }

  /** Emitted for every change event of the stream (detail views follow their deployment). */
  get remoteChanged(): ISignal<this, IChangeEvent> {
    return this._remoteChanged;
  }

  /** The signed-in user, once known. */
  get me(): IMe | null {
    return this._me;
  }

  /** Every deployment of the user's groups, newest update first. */
  get all(): readonly IDeployment[] {
    return this._all;
  }

  /** The deployments that pass the search and "Deployed by me". */
  get visible(): IDeployment[] {
    const me = this._me?.name;
    return this._all.filter(
      d =>
        matchesName(d, this._search) &&
        (!this._mineOnly || (me !== undefined && d.spec.userName === me))
    );
  }

  get state(): ListState {
    return this._state;
  }

  /** The last error's message (shown as is), or ''. */
  get error(): string {
    return this._error;
  }

  get search(): string {
    return this._search;
  }

  set search(value: string) {
    if (value !== this._search) {
      this._search = value;
      this._changed.emit();
    }
  }

  get mineOnly(): boolean {
    return this._mineOnly;
  }

  set mineOnly(value: boolean) {
    if (value !== this._mineOnly) {
      this._mineOnly = value;
      this._changed.emit();
    }
  }

  /** Emitted whenever what the list shows may have changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when a deployment of the user's reaches Deployed or Failed. */
  get phaseChanged(): ISignal<this, IPhaseChange> {
    return this._phaseChanged;
  }

  /** The current wait between polls, in milliseconds. */
  get interval(): number {
    return this._poll.frequency.interval;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Also notify about this deployment (the user acted on it in this session). */
  watch(id: string): void {
    this._watched.add(id);
  }

  /** Poll now (Refresh button, panel shown, after an action). */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  /**
   * One poll: fetch the user (once) and the list, keep them and pick the next interval.
   * Rejects on errors, so that the poll backs off.
   */
  async load(): Promise<void> {
    try {
      if (!this._me) {
        this._me = await this.api.me();
      }
      const list = await this.api.list();
      const changed = fingerprint(list) !== fingerprint(this._all);
      const recovered = this._state !== 'ready';
      this._ingest(list);
      this._state = 'ready';
      this._error = '';
      this._setInterval(changed);
      if (changed || recovered) {
        this._changed.emit();
      }
    } catch (error) {
      const missing =
        error instanceof APIError && error.status === 404 && !this._me;
      const state: ListState = missing ? 'server-missing' : 'error';
      const message = error instanceof Error ? error.message : String(error);
      if (state !== this._state || message !== this._error) {
        this._state = state;
        this._error = message;
        this._changed.emit();
      }
      // Back to the base interval: the poll's own backoff grows it from there.
      this._poll.frequency = {
        ...this._poll.frequency,
        interval: this._intervals.idle
      };
      throw error;
    }
  }

  /**
   * A fresher copy of one deployment (from a detail view or an action's answer): put it in
   * the list and notify about its phase change, if any.
   */
  observe(deployment: IDeployment): void {
    const wasMoving = this._all.some(isTransitional);
    const index = this._all.findIndex(d => d.id === deployment.id);
    const next = [...this._all];
    if (index >= 0) {
      next[index] = { ...deployment, status: { ...deployment.status } };
      delete next[index].status.history;
    } else {
      next.unshift(deployment);
    }
    this._ingest(next);
    this._changed.emit();
    if (isTransitional(deployment) && !wasMoving) {
      // A rollout started here: poll fast from now on (and keep polling while hidden).
      this._setInterval(true);
      void this._poll.refresh();
    }
  }

  /** A deployment is gone (deleted here). */
  forget(id: string): void {
    this._all = this._all.filter(d => d.id !== id);
    this._phases.delete(id);
    this._watched.delete(id);
    this._changed.emit();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._stream?.dispose();
    if (this._eventTimer !== null) {
      clearTimeout(this._eventTimer);
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _onEvent(event: IChangeEvent): void {
    if (event.type === 'ready') {
      return;
    }
    this._remoteChanged.emit(event);
    if (this._eventTimer) {
      return; // a reload is on its way and will see this change too
    }
    this._eventTimer = setTimeout(() => {
      this._eventTimer = null;
      this.load().catch(() => undefined);
    }, EVENT_COALESCE_MS);
  }

  private _onLive(live: boolean): void {
    this._live = live;
    // Going live: catch up on what changed before the stream started. Going down: poll.
    this._setInterval(true);
    this._changed.emit();
    if (live) {
      this.load().catch(() => undefined);
    }
  }

  private _ingest(list: IDeployment[]): void {
    for (const deployment of list) {
      const previous = this._phases.get(deployment.id);
      const phase = deployment.status.phase;
      this._phases.set(deployment.id, phase);
      if (
        previous !== undefined &&
        previous !== phase &&
        SETTLED.has(phase) &&
        this._notifies(deployment)
      ) {
        this._phaseChanged.emit({ deployment, previous });
      }
    }
    this._all = list;
  }

  private _notifies(deployment: IDeployment): boolean {
    return (
      this._watched.has(deployment.id) ||
      (this._me !== null && deployment.spec.userName === this._me.name)
    );
  }

  private _setInterval(changed: boolean): void {
    const interval = this._live
      ? this._intervals.max
      : nextInterval(
          this._poll.frequency.interval,
          { transitional: this._all.some(isTransitional), changed },
          this._intervals
        );
    this._poll.frequency = { ...this._poll.frequency, interval };
  }

  private _all: IDeployment[] = [];
  private _me: IMe | null = null;
  private _state: ListState = 'loading';
  private _error = '';
  private _search = '';
  private _mineOnly = false;
  private _phases = new Map<string, Phase>();
  private _watched = new Set<string>();
  private _intervals: IIntervals;
  private _isVisible: () => boolean;
  private _poll: Poll;
  private _stream: ChangeStream | null = null;
  private _live = false;
  private _eventTimer: ReturnType<typeof setTimeout> | null = null;
  private _changed = new Signal<this, void>(this);
  private _phaseChanged = new Signal<this, IPhaseChange>(this);
  private _remoteChanged = new Signal<this, IChangeEvent>(this);
}

export namespace DeploymentListModel {
  export interface IOptions {
    api: PrimeHubAPI;
    /** Whether the sidebar panel is showing; the poll stands by while it is not. */
    isVisible?: () => boolean;
    intervals?: IIntervals;
    /** Start polling at once (default); tests call `load()` themselves. */
    autoStart?: boolean;
    /** Subscribe to the server's change stream (default: as `autoStart`). */
    events?: boolean;
  }
}

/**
 * One deployment, with its history, as a detail view shows it; polled while the view shows.
 */
export class DeploymentModel implements IDisposable {
  constructor(options: DeploymentModel.IOptions) {
    this.api = options.api;
    this.id = options.id;
    this._list = options.list ?? null;
    this._intervals = options.intervals ?? DEFAULT_INTERVALS;
    this._isVisible = options.isVisible ?? (() => true);
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.load(),
      frequency: {
        interval: this._intervals.active,
        backoff: true,
        max: this._intervals.max
      },
      name: `primehub-jupyter:deployment:${options.id}`,
      standby: () => (this._isVisible() ? 'when-hidden' : true)
    });
    this._list?.remoteChanged.connect(this._onRemote, this);
  }

  readonly api: PrimeHubAPI;
  readonly id: string;

  /** Whether its view shows (the Jobs tab polls only then). */
  isVisible(): boolean {
    return this._isVisible();
  }

  /** The deployment (with history), once loaded. */
  get deployment(): IDeployment | null {
    return this._deployment;
  }

  /** The last error's message, or ''. */
  get error(): string {
    return this._error;
  }

  /** The deployment no longer exists (or the user lost access to it). */
  get gone(): boolean {
    return this._gone;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  async load(): Promise<void> {
    if (this._gone) {
      return;
    }
    try {
      const deployment = await this.api.get(this.id);
      this.set(deployment);
    } catch (error) {
      if (error instanceof APIError && error.status === 404) {
        this._gone = true;
        this._error = error.message;
        this._changed.emit();
        void this._poll.stop();
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      if (message !== this._error) {
        this._error = message;
        this._changed.emit();
      }
      throw error;
    }
  }

  /** Show a fresher copy (a poll's, or an action's answer) and tell the list about it. */
  set(deployment: IDeployment): void {
    const changed =
      this._deployment === null ||
      fingerprint([deployment]) !== fingerprint([this._deployment]) ||
      (deployment.status.history?.length ?? 0) !==
        (this._deployment.status.history?.length ?? 0);
    this._deployment = deployment;
    this._error = '';
    // With the change stream live, events bring changes: the poll is only a safety net.
    const interval = this._list?.live
      ? this._intervals.max
      : nextInterval(
          this._poll.frequency.interval,
          { transitional: isTransitional(deployment), changed },
          this._intervals
        );
    this._poll.frequency = { ...this._poll.frequency, interval };
    this._list?.observe(deployment);
    if (changed) {
      this._changed.emit();
    }
  }

  /** A change event: reload at once if it is about this deployment (or its group's rules). */
  private _onRemote(_: DeploymentListModel, event: IChangeEvent): void {
    const mine = event.id === this.id || event.type === 'groups';
    if (!mine || this._gone || this._reloading || !this._isVisible()) {
      return;
    }
    this._reloading = true;
    setTimeout(() => {
      this._reloading = false;
      this.load().catch(() => undefined);
    }, EVENT_COALESCE_MS);
  }

  /** The deployment was deleted from this view. */
  markGone(): void {
    this._gone = true;
    this._list?.forget(this.id);
    void this._poll.stop();
    this._changed.emit();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _deployment: IDeployment | null = null;
  private _error = '';
  private _gone = false;
  private _reloading = false;
  private _list: DeploymentListModel | null;
  private _intervals: IIntervals;
  private _isVisible: () => boolean;
  private _poll: Poll;
  private _changed = new Signal<this, void>(this);
}

export namespace DeploymentModel {
  export interface IOptions {
    api: PrimeHubAPI;
    id: string;
    list?: DeploymentListModel;
    isVisible?: () => boolean;
    intervals?: IIntervals;
    autoStart?: boolean;
  }
}
