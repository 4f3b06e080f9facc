/** Batch jobs in the detail view: their words and numbers, the New job form, and a list that polls. */

import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { ICreateJob, IJob, PrimeHubAPI } from './api';
import { APIError } from './request';

/** Phases a job leaves by itself: the list polls while one is there. */
export const LIVE_JOB_PHASES: ReadonlySet<string> = new Set([
  'Pending',
  'Running'
]);

/** Whether a job may still change (Pending, Running): it can be cancelled, not removed. */
export function isLive(job: IJob): boolean {
  return LIVE_JOB_PHASES.has(job.phase);
}

/** A job phase's colour, in the tones of the deployment phases (`format.ts` PHASE_TONES). */
const JOB_TONES: Readonly<Record<string, string>> = {
  Pending: 'deploying',
  Running: 'deploying',
  Succeeded: 'deployed',
  Failed: 'failed',
  Cancelled: 'stopped'
};

/** The CSS modifier of a job phase. */
export function jobPhaseClass(phase: string): string {
  return `jp-PrimeHub-phase-${JOB_TONES[phase] ?? 'stopped'}`;
}

const COUNT = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A row count with thousands separators: `1,000,000`. */
export function formatCount(value: number | null | undefined): string {
  return COUNT.format(value ?? 0);
}

/** Rows per second as read in a table cell: `12,345 rows/s`, `0.5 rows/s`, `–` before any. */
export function formatRate(rowsPerSecond: number): string {
  if (!(rowsPerSecond > 0)) {
    return '–';
  }
  const value =
    rowsPerSecond < 10
      ? rowsPerSecond.toFixed(1).replace(/\.0$/, '')
      : formatCount(rowsPerSecond);
  return `${value} rows/s`;
}

/** A duration as a person says it: `45 s`, `3 min 20 s`, `1 h 5 min`. */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.round(seconds));
  if (total < 60) {
    return `${total} s`;
  }
  if (total < 3600) {
    const s = total % 60;
    return `${Math.floor(total / 60)} min${s ? ` ${s} s` : ''}`;
  }
  const minutes = Math.round((total % 3600) / 60);
  const hours = Math.floor(total / 3600) + (minutes === 60 ? 1 : 0);
  const m = minutes % 60;
  return `${hours} h${m ? ` ${m} min` : ''}`;
}

/**
 * Seconds left at the current rate when the progress is known (`JobRecord.eta_seconds` in
 * core/jobs.py, the same formula), else null.
 */
export function etaSeconds(job: IJob): number | null {
  const progress = job.progress;
  if (
    progress === null ||
    progress === undefined ||
    progress <= 0 ||
    job.rowsPerSecond <= 0
  ) {
    return null;
  }
  const left = (job.rowsRead * (1 - progress)) / progress;
  return left / job.rowsPerSecond;
}

/** The progress as a whole percentage (100 once Succeeded), or null when unknown. */
export function progressPercent(job: IJob): number | null {
  if (job.phase === 'Succeeded') {
    return 100;
  }
  if (job.progress === null || job.progress === undefined) {
    return null;
  }
  return Math.min(100, Math.max(0, Math.floor(job.progress * 100)));
}

/** The words beside the progress bar: `42% · ETA 1 min 5 s` while Running, else the share. */
export function progressText(job: IJob): string {
  const percent = progressPercent(job);
  if (job.phase === 'Pending') {
    return 'waiting to start';
  }
  if (percent === null) {
    return job.phase === 'Running'
      ? `${formatCount(job.rowsRead)} rows read`
      : '';
  }
  const eta = job.phase === 'Running' ? etaSeconds(job) : null;
  return eta === null
    ? `${percent}%`
    : `${percent}% · ETA ${formatDuration(eta)}`;
}

/** Rows read, scored and failed as one cell: `1,000 / 998 / 2`. */
export function rowCounts(job: IJob): string {
  return [job.rowsRead, job.rowsScored, job.rowsFailed]
    .map(formatCount)
    .join(' / ');
}

/** Newest first, as the API sends them (kept here for answers merged locally). */
export function newestFirst(jobs: readonly IJob[]): IJob[] {
  return [...jobs].sort((a, b) => b.createTime.localeCompare(a.createTime));
}

// ---- where a job's files are, for opening them in JupyterLab ----------------------------

const HOME = /^\/(?:root|home\/[^/]+|Users\/[^/]+)(?=\/|$)/;

/**
 * A local path as the JupyterLab file browser names it (relative to the server's root), or
 * null when it lies outside the root, is not a local path, or the root is unknown.
 *
 * `root` is the page config's `serverRoot`: absolute, or `~/...` when the root is in the
 * home directory (the server writes it so), in which case a usual home (`/home/<user>`,
 * `/root`, `/Users/<user>`) stands for `~`.
 */
export function serverPath(path: string, root: string): string | null {
  if (!path.startsWith('/') || !root) {
    return null;
  }
  const clean = (p: string) => p.replace(/\/+/g, '/').replace(/\/$/, '');
  let absolute = clean(path);
  const base = clean(root);
  if (base === '~' || base.startsWith('~/')) {
    const home = HOME.exec(absolute);
    if (!home) {
      return null;
    }
    absolute = '~' + absolute.slice(home[0].length);
  } else if (base && !base.startsWith('/')) {
    return null;
  }
  if (absolute.split('/').includes('..')) {
    return null;
  }
  if (base === '') {
    // The root is `/` itself.
    return absolute.slice(1) || null;
  }
  if (!absolute.startsWith(base + '/')) {
    return null;
  }
  return absolute.slice(base.length + 1);
}

// ---- the New job form ---------------------------------------------------------------------

/** The New job form as typed: '' for "the default" in the selects. */
export interface IJobFormValues {
  input: string;
  output: string;
  format: '' | 'csv' | 'parquet' | 'jsonl';
  predictor: string;
  outputColumns: 'all' | 'predictions';
  overwrite: boolean;
}

export type JobFormField = keyof IJobFormValues;

/** Field -> message; `''` holds a message that belongs to no one field. */
export type JobFormErrors = Partial<Record<JobFormField | '', string>>;

export function emptyJobForm(): IJobFormValues {
  return {
    input: '',
    output: '',
    format: '',
    predictor: '',
    outputColumns: 'all',
    overwrite: false
  };
}

/** What is missing before a round trip; the server checks the rest (files, columns). */
export function jobFormProblems(values: IJobFormValues): JobFormErrors {
  const errors: JobFormErrors = {};
  if (!values.input.trim()) {
    errors.input = 'enter the file to score (a path on the server)';
  }
  if (!values.output.trim()) {
    errors.output = 'enter where the scores go';
  } else if (values.output.trim() === values.input.trim()) {
    errors.output = 'the output must not be the input';
  }
  return errors;
}

/** The body of `POST deployments/<id>/jobs`; the defaults are left to the server. */
export function toCreateJob(values: IJobFormValues): ICreateJob {
  const body: ICreateJob = {
    input: values.input.trim(),
    output: values.output.trim(),
    outputColumns: values.outputColumns,
    overwrite: values.overwrite
  };
  if (values.format) {
    body.format = values.format;
  }
  if (values.predictor) {
    body.predictor = values.predictor;
  }
  return body;
}

const JOB_FIELDS: Readonly<Record<string, JobFormField>> = {
  input: 'input',
  output: 'output',
  format: 'format',
  predictor: 'predictor',
  outputColumns: 'outputColumns',
  output_columns: 'outputColumns',
  overwrite: 'overwrite'
};

/**
 * Put an answer of `POST .../jobs` on the form: a 4xx naming a field under it (the field is
 * the last part of `details[].field` that names one), anything else above the form.
 */
export function jobFieldErrorsOf(error: unknown): JobFormErrors {
  if (!(error instanceof APIError)) {
    return { '': error instanceof Error ? error.message : String(error) };
  }
  const errors: JobFormErrors = {};
  for (const detail of error.details) {
    const parts = String(detail.field ?? '').split('.');
    const field = parts.map(part => JOB_FIELDS[part]).find(Boolean);
    const message =
      error.details.length === 1 ? error.message : (detail.message ?? '');
    if (field && message) {
      errors[field] = errors[field] ? `${errors[field]}; ${message}` : message;
    }
  }
  if (Object.keys(errors).length === 0) {
    errors[''] = error.message;
  }
  return errors;
}

// ---- the list, polled while a job is live ---------------------------------------------------

/** Poll intervals of the job list in milliseconds. */
export interface IJobIntervals {
  /** Right after a live job changed. */
  active: number;
  /** The longest wait while live jobs do not change, and after errors. */
  max: number;
}

export const JOB_INTERVALS: IJobIntervals = { active: 1000, max: 15000 };

/**
 * The wait before the next poll, or null for none: `active` after a change while a job is
 * live, twice the previous wait (up to `max`) while nothing changes or after an error, and
 * no poll at all once every job is finished.
 */
export function nextJobInterval(
  previous: number,
  state: { live: boolean; changed: boolean; failed: boolean },
  intervals: IJobIntervals = JOB_INTERVALS
): number | null {
  if (state.failed) {
    return Math.min(intervals.max, Math.max(intervals.active, previous * 2));
  }
  if (!state.live) {
    return null;
  }
  if (state.changed) {
    return intervals.active;
  }
  return Math.min(intervals.max, Math.max(intervals.active, previous * 2));
}

/** What the list shows of each job, to tell whether a poll brought anything new. */
export function jobsFingerprint(jobs: readonly IJob[]): string {
  return jobs
    .map(
      j =>
        `${j.id}:${j.phase}:${j.rowsRead}:${j.rowsScored}:${j.rowsFailed}:` +
        `${j.progress}:${j.finishTime}:${j.message}`
    )
    .join('|');
}

/**
 * The jobs of one deployment, newest first. `refresh()` loads now; after that the list polls
 * by itself only while a job is Pending or Running, backing off while nothing changes, and
 * sends no request while `isVisible()` says the view is hidden.
 */
export class JobListModel implements IDisposable {
  constructor(options: {
    api: PrimeHubAPI;
    deploymentId: string;
    isVisible?: () => boolean;
    intervals?: IJobIntervals;
  }) {
    this.api = options.api;
    this.deploymentId = options.deploymentId;
    this._isVisible = options.isVisible ?? (() => true);
    this._intervals = options.intervals ?? JOB_INTERVALS;
    this._interval = this._intervals.active;
  }

  readonly api: PrimeHubAPI;
  readonly deploymentId: string;

  get jobs(): readonly IJob[] {
    return this._jobs;
  }

  /** Whether a first answer came. */
  get loaded(): boolean {
    return this._loaded;
  }

  /** The last load's error message, or ''. */
  get error(): string {
    return this._error;
  }

  /** The wait before the next poll in milliseconds, or null when none is planned. */
  get nextPoll(): number | null {
    return this._timer === undefined ? null : this._interval;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Load now, then poll while a job is live. */
  async refresh(): Promise<void> {
    this._cancelTimer();
    let failed = false;
    let changed = false;
    try {
      const jobs = await this.api.jobs(this.deploymentId);
      if (this._disposed) {
        return;
      }
      changed = jobsFingerprint(jobs) !== jobsFingerprint(this._jobs);
      this._jobs = jobs;
      changed = changed || !this._loaded || this._error !== '';
      this._loaded = true;
      this._error = '';
    } catch (error) {
      if (this._disposed) {
        return;
      }
      failed = true;
      const message = error instanceof Error ? error.message : String(error);
      changed = message !== this._error;
      this._error = message;
    }
    if (changed) {
      this._changed.emit();
    }
    this._plan({ live: this._jobs.some(isLive), changed, failed });
  }

  /** Put a job the API just answered into the list (a submit, a cancel). */
  put(job: IJob): void {
    this._jobs = newestFirst([
      job,
      ...this._jobs.filter(other => other.id !== job.id)
    ]);
    this._changed.emit();
    this._plan({ live: this._jobs.some(isLive), changed: true, failed: false });
  }

  /** Drop a removed job from the list. */
  drop(jobId: string): void {
    this._jobs = this._jobs.filter(job => job.id !== jobId);
    this._changed.emit();
  }

  dispose(): void {
    this._disposed = true;
    this._cancelTimer();
    Signal.clearData(this);
  }

  private _plan(state: {
    live: boolean;
    changed: boolean;
    failed: boolean;
  }): void {
    this._cancelTimer();
    const next = nextJobInterval(this._interval, state, this._intervals);
    if (next === null || this._disposed) {
      this._interval = this._intervals.active;
      return;
    }
    this._interval = next;
    this._schedule();
  }

  private _schedule(): void {
    this._timer = setTimeout(() => {
      this._timer = undefined;
      if (this._isVisible()) {
        void this.refresh();
      } else {
        // Hidden: no request; look again later at the same pace.
        this._schedule();
      }
    }, this._interval);
  }

  private _cancelTimer(): void {
    if (this._timer !== undefined) {
      clearTimeout(this._timer);
      this._timer = undefined;
    }
  }

  private _jobs: IJob[] = [];
  private _loaded = false;
  private _error = '';
  private _interval: number;
  private _timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private _disposed = false;
  private _isVisible: () => boolean;
  private _intervals: IJobIntervals;
  private _changed = new Signal<this, void>(this);
}
