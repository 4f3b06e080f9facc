/** The Jobs tab: a deployment's batch jobs with their progress, and a form to start one. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { IDeployment, IJob, PrimeHubAPI } from '../api';
import { localTime, utcTime } from '../format';
import {
  emptyJobForm,
  formatRate,
  IJobFormValues,
  isLive,
  jobFieldErrorsOf,
  JobFormErrors,
  JobFormField,
  jobFormProblems,
  JobListModel,
  jobPhaseClass,
  progressPercent,
  progressText,
  rowCounts,
  serverPath,
  toCreateJob
} from '../jobs';
import { CopyButton, ErrorMessage, messageOf, useSignal } from './common';

/** How the tab opens a file of the server in JupyterLab. */
export interface IFileOpener {
  /** The server's root directory as the page config says it (absolute, or `~/...`). */
  root: string;
  /** Open a path relative to the root; rejects (with a message) when there is no such file. */
  open(path: string): Promise<void>;
}

/** What each deployment's New job form holds while it is closed: nothing typed is lost. */
const drafts = new Map<string, IJobFormValues>();

/** A job's phase, coloured like a deployment's. */
function JobPhaseBadge(props: { job: IJob }): JSX.Element {
  return (
    <span className={`jp-PrimeHub-badge ${jobPhaseClass(props.job.phase)}`}>
      <span className="jp-PrimeHub-dot" aria-hidden="true" />
      {props.job.phase}
    </span>
  );
}

function Time(props: { iso: string | null | undefined }): JSX.Element {
  return props.iso ? (
    <span title={utcTime(props.iso)}>{localTime(props.iso)}</span>
  ) : (
    <span className="jp-PrimeHub-muted">–</span>
  );
}

function JobProgress(props: { job: IJob }): JSX.Element {
  const { job } = props;
  const percent = progressPercent(job);
  const text = progressText(job);
  return (
    <div className="jp-PrimeHub-job-progress">
      {isLive(job) || percent !== null ? (
        <progress
          max={100}
          value={percent ?? undefined}
          aria-label={`Progress of ${job.id}`}
        />
      ) : null}
      {text ? <span className="jp-PrimeHub-muted">{text}</span> : null}
    </div>
  );
}

export function JobsTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
  /** Whether the view shows (the list sends no request while hidden). */
  isVisible?: () => boolean;
  files?: IFileOpener;
}): JSX.Element {
  const { api, deployment, files } = props;
  const id = deployment.id;
  const visible = React.useRef(props.isVisible);
  visible.current = props.isVisible;
  const [model] = React.useState(
    () =>
      new JobListModel({
        api,
        deploymentId: id,
        isVisible: () =>
          (visible.current?.() ?? true) &&
          (typeof document === 'undefined' || !document.hidden)
      })
  );
  useSignal(model.changed);
  const [formOpen, setFormOpen] = React.useState(false);
  const [error, setError] = React.useState('');
  const [busy, setBusy] = React.useState<string | null>(null);
  const [logs, setLogs] = React.useState<{
    job: string;
    lines: string[];
  } | null>(null);
  const [outside, setOutside] = React.useState<{
    job: string;
    path: string;
    why: string;
  } | null>(null);

  React.useEffect(() => {
    void model.refresh();
    return () => model.dispose();
  }, [model]);

  const act = async (job: IJob, run: () => Promise<void>) => {
    setBusy(job.id);
    setError('');
    try {
      await run();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(null);
    }
  };

  const cancel = (job: IJob) =>
    act(job, async () => {
      const answer = await showDialog({
        title: `Cancel job ${job.id}?`,
        body: 'It stops after the chunk it is scoring; the rows written so far stay in the output.',
        buttons: [
          Dialog.cancelButton({ label: 'Keep running' }),
          Dialog.warnButton({ label: 'Cancel job' })
        ]
      });
      if (!answer.button.accept) {
        return;
      }
      const cancelled = await api.deleteJob(id, job.id);
      if (cancelled) {
        model.put(cancelled);
      }
      await model.refresh();
    });

  const remove = (job: IJob) =>
    act(job, async () => {
      const answer = await showDialog({
        title: `Remove job ${job.id}?`,
        body: 'It leaves the list of jobs.',
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
      });
      if (!answer.button.accept) {
        return;
      }
      await api.deleteJob(id, job.id);
      model.drop(job.id);
    });

  const open = (job: IJob, path: string) =>
    act(job, async () => {
      const relative = files ? serverPath(path, files.root) : null;
      if (!files || relative === null) {
        setOutside({
          job: job.id,
          path,
          why: 'Not under the Jupyter server’s root: open it from a terminal or a notebook.'
        });
        return;
      }
      try {
        await files.open(relative);
        setOutside(null);
      } catch (e) {
        setOutside({ job: job.id, path, why: messageOf(e) });
      }
    });

  const toggleLogs = (job: IJob) =>
    act(job, async () => {
      if (logs?.job === job.id) {
        setLogs(null);
        return;
      }
      setLogs({ job: job.id, lines: await api.jobLogs(id, job.id, 200) });
    });

  const jobs = model.jobs;
  return (
    <div className="jp-PrimeHub-jobs">
      <div className="jp-PrimeHub-row">
        <button
          type="button"
          className="jp-PrimeHub-button jp-mod-accept"
          aria-expanded={formOpen}
          onClick={() => setFormOpen(!formOpen)}
        >
          New job
        </button>
        <button
          type="button"
          className="jp-PrimeHub-button"
          onClick={() => void model.refresh()}
        >
          Reload
        </button>
        {model.nextPoll !== null ? (
          <span className="jp-PrimeHub-muted" role="status">
            Following the running jobs…
          </span>
        ) : null}
      </div>
      {formOpen ? (
        <NewJobForm
          api={api}
          deployment={deployment}
          onStarted={job => {
            model.put(job);
            void model.refresh();
          }}
          onClose={() => setFormOpen(false)}
        />
      ) : null}
      <ErrorMessage message={error || model.error} />
      {!model.loaded && !model.error ? (
        <p className="jp-PrimeHub-muted" role="status">
          Loading the jobs…
        </p>
      ) : null}
      {model.loaded && jobs.length === 0 ? (
        <p className="jp-PrimeHub-muted">
          No jobs yet: a job scores a whole file (CSV, Parquet or JSON lines)
          with this deployment’s model, in its own process.
        </p>
      ) : null}
      {jobs.length ? (
        <div className="jp-PrimeHub-table-scroll">
          <table className="jp-PrimeHub-table" aria-label="Jobs">
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Phase</th>
                <th scope="col" title="Rows read / scored / failed">
                  Rows read / scored / failed
                </th>
                <th scope="col">Rate</th>
                <th scope="col">Progress</th>
                <th scope="col">Started / finished</th>
                <th scope="col">
                  <span className="jp-PrimeHub-sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {jobs.map(job => (
                <React.Fragment key={job.id}>
                  <tr data-job-id={job.id} data-phase={job.phase}>
                    <th scope="row">
                      <code title={`${job.spec.input} → ${job.spec.output}`}>
                        {job.id}
                      </code>
                    </th>
                    <td>
                      <JobPhaseBadge job={job} />
                    </td>
                    <td className="jp-PrimeHub-job-rows">{rowCounts(job)}</td>
                    <td className="jp-PrimeHub-job-rate">
                      {formatRate(job.rowsPerSecond)}
                    </td>
                    <td>
                      <JobProgress job={job} />
                    </td>
                    <td className="jp-PrimeHub-job-times">
                      <Time iso={job.startTime} />
                      {job.finishTime ? (
                        <div>
                          <Time iso={job.finishTime} />
                        </div>
                      ) : null}
                    </td>
                    <td>
                      <div className="jp-PrimeHub-job-actions">
                        {isLive(job) ? (
                          <button
                            type="button"
                            className="jp-PrimeHub-button jp-mod-warn"
                            aria-label={`Cancel ${job.id}`}
                            disabled={busy === job.id}
                            onClick={() => void cancel(job)}
                          >
                            Cancel
                          </button>
                        ) : (
                          <button
                            type="button"
                            className="jp-PrimeHub-button"
                            aria-label={`Remove ${job.id}`}
                            disabled={busy === job.id}
                            onClick={() => void remove(job)}
                          >
                            Remove
                          </button>
                        )}
                        <button
                          type="button"
                          className="jp-PrimeHub-button"
                          aria-label={`Open the output of ${job.id}`}
                          title={job.spec.output}
                          disabled={job.phase === 'Pending'}
                          onClick={() => void open(job, job.spec.output)}
                        >
                          Open output
                        </button>
                        <button
                          type="button"
                          className="jp-PrimeHub-button"
                          aria-label={`Log of ${job.id}`}
                          aria-expanded={logs?.job === job.id}
                          onClick={() => void toggleLogs(job)}
                        >
                          Log
                        </button>
                        {job.rowsFailed > 0 ? (
                          <button
                            type="button"
                            className="jp-PrimeHub-button"
                            aria-label={`Open the errors of ${job.id}`}
                            title={job.errors}
                            onClick={() => void open(job, job.errors)}
                          >
                            Open errors
                          </button>
                        ) : null}
                      </div>
                    </td>
                  </tr>
                  {job.message ||
                  outside?.job === job.id ||
                  logs?.job === job.id ? (
                    <tr className="jp-PrimeHub-job-note">
                      <td colSpan={7}>
                        {job.message ? (
                          <div
                            className={
                              job.phase === 'Failed'
                                ? 'jp-PrimeHub-error'
                                : 'jp-PrimeHub-muted'
                            }
                          >
                            {job.message}
                          </div>
                        ) : null}
                        {outside?.job === job.id ? (
                          <div className="jp-PrimeHub-row" role="status">
                            <span className="jp-PrimeHub-muted">
                              {outside.why}
                            </span>
                            <code className="jp-PrimeHub-break">
                              {outside.path}
                            </code>
                            <CopyButton
                              text={outside.path}
                              ariaLabel="Copy the path"
                            />
                          </div>
                        ) : null}
                        {logs?.job === job.id ? (
                          <pre
                            className="jp-PrimeHub-log-view jp-PrimeHub-job-log"
                            aria-label={`Log lines of ${job.id}`}
                            tabIndex={0}
                          >
                            {logs.lines.length
                              ? logs.lines.join('\n')
                              : 'No log lines yet.'}
                          </pre>
                        ) : null}
                      </td>
                    </tr>
                  ) : null}
                </React.Fragment>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </div>
  );
}

const FORMATS: { value: IJobFormValues['format']; label: string }[] = [
  { value: '', label: 'From the file name' },
  { value: 'csv', label: 'CSV' },
  { value: 'parquet', label: 'Parquet' },
  { value: 'jsonl', label: 'JSON lines' }
];

/** The New job form: a 4xx lands on its field (or above the form), what was typed stays. */
function NewJobForm(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
  onStarted(job: IJob): void;
  onClose(): void;
}): JSX.Element {
  const { api, deployment } = props;
  const id = deployment.id;
  const prefix = `jp-PrimeHub-job-${id}`;
  const [values, setValues] = React.useState<IJobFormValues>(
    () => drafts.get(id) ?? emptyJobForm()
  );
  const [errors, setErrors] = React.useState<JobFormErrors>({});
  const [busy, setBusy] = React.useState(false);
  const [started, setStarted] = React.useState('');
  const predictors = deployment.spec.predictors.map(
    (p, index) => p.name ?? `predictor${index + 1}`
  );

  const update = (change: Partial<IJobFormValues>) => {
    setValues(v => {
      const next = { ...v, ...change };
      drafts.set(id, next);
      return next;
    });
    setErrors(e => {
      const next = { ...e };
      for (const name of Object.keys(change)) {
        delete next[name as JobFormField];
      }
      // The format defaults to the input's ending: a new input answers its message too.
      if ('input' in change) {
        delete next.format;
      }
      return next;
    });
  };

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setStarted('');
    const problems = jobFormProblems(values);
    if (Object.keys(problems).length) {
      setErrors(problems);
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      const job = await api.createJob(id, toCreateJob(values));
      setStarted(`Started ${job.id}.`);
      props.onStarted(job);
    } catch (e) {
      setErrors(jobFieldErrorsOf(e));
    } finally {
      setBusy(false);
    }
  };

  const field = (
    name: JobFormField,
    label: string,
    input: (ids: {
      id: string;
      'aria-invalid': boolean;
      'aria-describedby'?: string;
    }) => React.ReactNode,
    hint?: string
  ) => {
    const fieldId = `${prefix}-${name}`;
    const error = errors[name] ?? '';
    const described = [
      hint ? `${fieldId}-hint` : '',
      error ? `${fieldId}-error` : ''
    ]
      .filter(Boolean)
      .join(' ');
    return (
      <div className={`jp-PrimeHub-field ${error ? 'jp-mod-invalid' : ''}`}>
        <label htmlFor={fieldId}>{label}</label>
        {input({
          id: fieldId,
          'aria-invalid': Boolean(error),
          'aria-describedby': described || undefined
        })}
        {hint ? (
          <div className="jp-PrimeHub-hint" id={`${fieldId}-hint`}>
            {hint}
          </div>
        ) : null}
        {error ? (
          <div className="jp-PrimeHub-field-error" id={`${fieldId}-error`}>
            {error}
          </div>
        ) : null}
      </div>
    );
  };

  return (
    <form
      className="jp-PrimeHub-form jp-PrimeHub-job-form"
      aria-label="New job"
      onSubmit={submit}
      noValidate
    >
      <ErrorMessage message={errors[''] ?? ''} />
      <div className="jp-PrimeHub-row jp-PrimeHub-row-fields">
        {field(
          'input',
          'Input file',
          ids => (
            <input
              {...ids}
              type="text"
              value={values.input}
              placeholder="data/customers.csv"
              onChange={e => update({ input: e.target.value })}
            />
          ),
          'A path on the server (relative to its root) or a URI.'
        )}
        {field(
          'output',
          'Output file',
          ids => (
            <input
              {...ids}
              type="text"
              value={values.output}
              placeholder="data/customers-scored.csv"
              onChange={e => update({ output: e.target.value })}
            />
          ),
          'Failed rows go beside it, in <output>.errors.jsonl.'
        )}
      </div>
      <div className="jp-PrimeHub-row jp-PrimeHub-row-fields">
        {field('format', 'Input format', ids => (
          <select
            {...ids}
            value={values.format}
            onChange={e =>
              update({ format: e.target.value as IJobFormValues['format'] })
            }
          >
            {FORMATS.map(f => (
              <option key={f.value} value={f.value}>
                {f.label}
              </option>
            ))}
          </select>
        ))}
        {field('predictor', 'Predictor', ids => (
          <select
            {...ids}
            value={values.predictor}
            onChange={e => update({ predictor: e.target.value })}
          >
            <option value="">The primary</option>
            {predictors.map(name => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        ))}
        {field('outputColumns', 'Output columns', ids => (
          <select
            {...ids}
            value={values.outputColumns}
            onChange={e =>
              update({
                outputColumns: e.target.value as IJobFormValues['outputColumns']
              })
            }
          >
            <option value="all">The input’s and the predictions</option>
            <option value="predictions">Only the predictions</option>
          </select>
        ))}
      </div>
      {field('overwrite', 'Existing output', ids => (
        <label className="jp-PrimeHub-check">
          <input
            {...ids}
            type="checkbox"
            checked={values.overwrite}
            onChange={e => update({ overwrite: e.target.checked })}
          />
          Overwrite it
        </label>
      ))}
      <div className="jp-PrimeHub-form-actions">
        <button
          type="submit"
          className="jp-PrimeHub-button jp-mod-accept"
          disabled={busy}
          aria-busy={busy}
        >
          Start job
        </button>
        <button
          type="button"
          className="jp-PrimeHub-button"
          onClick={props.onClose}
        >
          Close
        </button>
        {started ? (
          <span className="jp-PrimeHub-muted" role="status">
            {started}
          </span>
        ) : null}
      </div>
    </form>
  );
}
