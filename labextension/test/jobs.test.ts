import { afterEach, describe, expect, it, vi } from 'vitest';

import { IJob, PrimeHubAPI } from '../src/api';
import {
  emptyJobForm,
  etaSeconds,
  formatDuration,
  formatRate,
  isLive,
  jobFieldErrorsOf,
  jobFormProblems,
  JobListModel,
  jobPhaseClass,
  nextJobInterval,
  progressPercent,
  progressText,
  rowCounts,
  serverPath,
  toCreateJob
} from '../src/jobs';
import { APIError } from '../src/request';
import { apiError, failure, FakeServer, json } from './helpers';

/** A job as the API sends it (core/jobs.py JobRecord). */
function job(id: string, overrides: Partial<IJob> = {}): IJob {
  return {
    id,
    deploymentId: 'iris-a1b2c',
    user: 'alice',
    revision: 1,
    spec: {
      input: '/srv/root/in.csv',
      output: '/srv/root/out.csv',
      format: 'csv',
      outputFormat: 'csv',
      predictor: 'predictor1',
      chunkRows: 10000,
      outputColumns: 'all',
      overwrite: false,
      maxFailedShare: 0.1
    },
    phase: 'Running',
    message: '',
    rowsRead: 0,
    rowsScored: 0,
    rowsFailed: 0,
    rowsPerSecond: 0,
    totalRows: null,
    progress: null,
    chunksDone: 0,
    createTime: '2026-11-30T05:00:00Z',
    startTime: '2026-11-30T05:00:01Z',
    finishTime: null,
    errors: '/srv/root/out.csv.errors.jsonl',
    ...overrides
  };
}

function apiErrorOf(status: number, body: Record<string, unknown>) {
  return new APIError(
    new Response(JSON.stringify(body), { status }),
    String(body.message),
    '',
    (body.details as never) ?? []
  );
}

describe('job words and numbers', () => {
  it('formats counts, rates and durations', () => {
    expect(
      rowCounts(
        job('j1', { rowsRead: 1234567, rowsScored: 1234560, rowsFailed: 7 })
      )
    ).toBe('1,234,567 / 1,234,560 / 7');
    expect(formatRate(0)).toBe('–');
    expect(formatRate(0.5)).toBe('0.5 rows/s');
    expect(formatRate(12345.6)).toBe('12,346 rows/s');
    expect(formatDuration(44.6)).toBe('45 s');
    expect(formatDuration(200)).toBe('3 min 20 s');
    expect(formatDuration(120)).toBe('2 min');
    expect(formatDuration(3900)).toBe('1 h 5 min');
    expect(formatDuration(7170)).toBe('2 h');
  });

  it('computes the ETA like JobRecord.eta_seconds', () => {
    // 250 rows read at 50 rows/s are a quarter: 750 rows left, 15 s.
    const running = job('j1', {
      rowsRead: 250,
      rowsPerSecond: 50,
      progress: 0.25
    });
    expect(etaSeconds(running)).toBeCloseTo(15);
    expect(progressPercent(running)).toBe(25);
    expect(progressText(running)).toBe('25% · ETA 15 s');
    expect(
      etaSeconds(job('j2', { rowsRead: 10, rowsPerSecond: 5 }))
    ).toBeNull();
    expect(
      etaSeconds(job('j3', { progress: 0.5, rowsPerSecond: 0 }))
    ).toBeNull();
    expect(etaSeconds(job('j4', { progress: 0, rowsPerSecond: 3 }))).toBeNull();
  });

  it('says what it knows of the progress in each phase', () => {
    expect(progressText(job('j1', { phase: 'Pending' }))).toBe(
      'waiting to start'
    );
    expect(progressText(job('j1', { rowsRead: 1500 }))).toBe('1,500 rows read');
    const done = job('j1', {
      phase: 'Succeeded',
      progress: 0.999,
      rowsRead: 150
    });
    expect(progressPercent(done)).toBe(100);
    expect(progressText(done)).toBe('100%');
    // Only a running job has an ETA.
    const failed = job('j1', {
      phase: 'Failed',
      progress: 0.4,
      rowsRead: 40,
      rowsPerSecond: 4
    });
    expect(progressText(failed)).toBe('40%');
    expect(progressPercent(job('j1', { progress: 1.7 }))).toBe(100);
    expect(progressText(job('j1', { phase: 'Cancelled' }))).toBe('');
  });

  it('tells live jobs from finished ones and colours them', () => {
    expect(isLive(job('j1', { phase: 'Pending' }))).toBe(true);
    expect(isLive(job('j1', { phase: 'Running' }))).toBe(true);
    for (const phase of ['Succeeded', 'Failed', 'Cancelled'] as const) {
      expect(isLive(job('j1', { phase }))).toBe(false);
    }
    expect(jobPhaseClass('Succeeded')).toBe('jp-PrimeHub-phase-deployed');
    expect(jobPhaseClass('Running')).toBe('jp-PrimeHub-phase-deploying');
    expect(jobPhaseClass('Failed')).toBe('jp-PrimeHub-phase-failed');
    expect(jobPhaseClass('Cancelled')).toBe('jp-PrimeHub-phase-stopped');
  });
});

describe('serverPath', () => {
  it('names paths under an absolute root relative to it', () => {
    expect(serverPath('/srv/root/data/out.csv', '/srv/root')).toBe(
      'data/out.csv'
    );
    expect(serverPath('/srv/root//data/out.csv', '/srv/root/')).toBe(
      'data/out.csv'
    );
    expect(serverPath('/srv/rootless/out.csv', '/srv/root')).toBeNull();
    expect(serverPath('/srv/root', '/srv/root')).toBeNull();
    expect(serverPath('/srv/root/../etc/passwd', '/srv/root')).toBeNull();
    expect(serverPath('/data/out.csv', '/')).toBe('data/out.csv');
  });

  it('reads a root in the home directory (~) against the usual homes', () => {
    expect(serverPath('/home/jovyan/work/out.csv', '~/work')).toBe('out.csv');
    expect(serverPath('/home/jovyan/out.csv', '~')).toBe('out.csv');
    expect(serverPath('/root/x/out.csv', '~')).toBe('x/out.csv');
    expect(serverPath('/home/jovyan/other/out.csv', '~/work')).toBeNull();
    expect(serverPath('/opt/out.csv', '~')).toBeNull();
  });

  it('leaves URIs and relative paths alone', () => {
    expect(serverPath('s3://bucket/out.csv', '/srv/root')).toBeNull();
    expect(serverPath('out.csv', '/srv/root')).toBeNull();
    expect(serverPath('/srv/root/out.csv', '')).toBeNull();
  });
});

describe('the New job form', () => {
  it('asks for the input and the output before a round trip', () => {
    expect(jobFormProblems(emptyJobForm())).toEqual({
      input: 'enter the file to score (a path on the server)',
      output: 'enter where the scores go'
    });
    const same = { ...emptyJobForm(), input: 'a.csv', output: ' a.csv ' };
    expect(jobFormProblems(same)).toEqual({
      output: 'the output must not be the input'
    });
  });

  it('sends only what was chosen, trimmed; the defaults stay the server’s', () => {
    const values = {
      ...emptyJobForm(),
      input: ' in.csv ',
      output: 'out.parquet'
    };
    expect(toCreateJob(values)).toEqual({
      input: 'in.csv',
      output: 'out.parquet',
      outputColumns: 'all',
      overwrite: false
    });
    expect(
      toCreateJob({
        ...values,
        format: 'jsonl',
        predictor: 'v2',
        outputColumns: 'predictions',
        overwrite: true
      })
    ).toEqual({
      input: 'in.csv',
      output: 'out.parquet',
      format: 'jsonl',
      predictor: 'v2',
      outputColumns: 'predictions',
      overwrite: true
    });
  });

  it('puts a 4xx on the field it names, else above the form', () => {
    const missing = apiErrorOf(400, {
      message: 'input: no file /srv/root/nope.csv',
      details: [{ field: 'input', message: 'no file' }]
    });
    expect(jobFieldErrorsOf(missing)).toEqual({
      input: 'input: no file /srv/root/nope.csv'
    });
    const several = apiErrorOf(422, {
      message: 'two problems',
      details: [
        { field: 'body.output', message: 'exists' },
        { field: 'predictor', message: 'no predictor v9' }
      ]
    });
    expect(jobFieldErrorsOf(several)).toEqual({
      output: 'exists',
      predictor: 'no predictor v9'
    });
    const columns = apiErrorOf(422, {
      message: "the input lacks the columns the model needs: 'petal width'"
    });
    expect(jobFieldErrorsOf(columns)).toEqual({
      '': "the input lacks the columns the model needs: 'petal width'"
    });
    expect(jobFieldErrorsOf(new Error('offline'))).toEqual({ '': 'offline' });
  });
});

describe('nextJobInterval', () => {
  it('polls fast after a change, backs off while nothing moves, stops when all are finished', () => {
    const intervals = { active: 1000, max: 8000 };
    expect(
      nextJobInterval(
        4000,
        { live: true, changed: true, failed: false },
        intervals
      )
    ).toBe(1000);
    expect(
      nextJobInterval(
        1000,
        { live: true, changed: false, failed: false },
        intervals
      )
    ).toBe(2000);
    expect(
      nextJobInterval(
        8000,
        { live: true, changed: false, failed: false },
        intervals
      )
    ).toBe(8000);
    expect(
      nextJobInterval(
        1000,
        { live: false, changed: true, failed: false },
        intervals
      )
    ).toBeNull();
    // After an error it retries, slower and slower, whatever it knew.
    expect(
      nextJobInterval(
        1000,
        { live: false, changed: false, failed: true },
        intervals
      )
    ).toBe(2000);
  });
});

describe('JobListModel', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('loads, polls while a job runs, and stops once it finished', async () => {
    vi.useFakeTimers();
    let phase: IJob['phase'] = 'Running';
    let read = 0;
    const server = new FakeServer().on(
      'GET',
      'deployments/iris-a1b2c/jobs',
      () => {
        read += 100;
        return json({ jobs: [job('j0123456789', { phase, rowsRead: read })] });
      }
    );
    const model = new JobListModel({
      api: new PrimeHubAPI(server.settings()),
      deploymentId: 'iris-a1b2c',
      intervals: { active: 1000, max: 4000 }
    });
    let changes = 0;
    model.changed.connect(() => changes++);
    await model.refresh();
    expect(model.loaded).toBe(true);
    expect(model.jobs[0].rowsRead).toBe(100);
    expect(model.nextPoll).toBe(1000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(server.to('deployments/iris-a1b2c/jobs')).toHaveLength(2);
    expect(model.jobs[0].rowsRead).toBe(200);
    phase = 'Succeeded';
    await vi.advanceTimersByTimeAsync(1000);
    expect(model.jobs[0].phase).toBe('Succeeded');
    expect(model.nextPoll).toBeNull();
    await vi.advanceTimersByTimeAsync(60000);
    expect(server.to('deployments/iris-a1b2c/jobs')).toHaveLength(3);
    expect(changes).toBe(3);
    model.dispose();
  });

  it('sends nothing while hidden, and nothing after dispose', async () => {
    vi.useFakeTimers();
    const server = new FakeServer().on('GET', 'deployments/d/jobs', {
      jobs: [job('j0123456789')]
    });
    let shown = false;
    const model = new JobListModel({
      api: new PrimeHubAPI(server.settings()),
      deploymentId: 'd',
      isVisible: () => shown,
      intervals: { active: 1000, max: 4000 }
    });
    await model.refresh();
    await vi.advanceTimersByTimeAsync(10000);
    expect(server.requests).toHaveLength(1);
    shown = true;
    await vi.advanceTimersByTimeAsync(1000);
    expect(server.requests).toHaveLength(2);
    model.dispose();
    await vi.advanceTimersByTimeAsync(10000);
    expect(server.requests).toHaveLength(2);
  });

  it('keeps the message of a failed load and retries with backoff', async () => {
    vi.useFakeTimers();
    const server = new FakeServer().on(
      'GET',
      'deployments/d/jobs',
      apiError(404, "deployment 'd' not found")
    );
    const model = new JobListModel({
      api: new PrimeHubAPI(server.settings()),
      deploymentId: 'd',
      intervals: { active: 1000, max: 4000 }
    });
    await model.refresh();
    expect(model.error).toBe("deployment 'd' not found");
    expect(model.nextPoll).toBe(2000);
    model.dispose();
  });

  it('puts a submitted job first and drops a removed one', async () => {
    const server = new FakeServer().on('GET', 'deployments/d/jobs', {
      jobs: [job('j0000000001', { phase: 'Succeeded' })]
    });
    const model = new JobListModel({
      api: new PrimeHubAPI(server.settings()),
      deploymentId: 'd'
    });
    await model.refresh();
    expect(model.nextPoll).toBeNull();
    model.put(
      job('j0000000002', {
        phase: 'Pending',
        createTime: '2026-11-30T06:00:00Z'
      })
    );
    expect(model.jobs.map(j => j.id)).toEqual(['j0000000002', 'j0000000001']);
    expect(model.nextPoll).not.toBeNull();
    model.drop('j0000000001');
    expect(model.jobs.map(j => j.id)).toEqual(['j0000000002']);
    model.dispose();
  });
});

describe('the jobs API', () => {
  it('creates, lists, cancels, removes and reads logs on the contract routes', async () => {
    const server = new FakeServer()
      .on('POST', 'deployments/iris/jobs', () =>
        json(job('j0123456789', { phase: 'Pending' }), 201)
      )
      .on('GET', 'deployments/iris/jobs', { jobs: [job('j0123456789')] })
      .on('GET', 'deployments/iris/jobs/j0123456789', job('j0123456789'))
      .on(
        'DELETE',
        'deployments/iris/jobs/j0123456789',
        job('j0123456789', { phase: 'Cancelled' })
      )
      .on(
        'DELETE',
        'deployments/iris/jobs/j0000000000',
        () => new Response(null, { status: 204 })
      )
      .on('GET', 'deployments/iris/jobs/j0123456789/logs', {
        replicas: ['j0123456789'],
        lines: ['started', 'chunk 1']
      });
    const api = new PrimeHubAPI(server.settings());
    const created = await api.createJob('iris', {
      input: 'in.csv',
      output: 'out.csv'
    });
    expect(created.phase).toBe('Pending');
    expect(
      JSON.parse(server.to('deployments/iris/jobs', 'POST')[0].body)
    ).toEqual({
      input: 'in.csv',
      output: 'out.csv'
    });
    expect((await api.jobs('iris')).map(j => j.id)).toEqual(['j0123456789']);
    expect((await api.job('iris', 'j0123456789')).phase).toBe('Running');
    expect((await api.deleteJob('iris', 'j0123456789'))?.phase).toBe(
      'Cancelled'
    );
    expect(await api.deleteJob('iris', 'j0000000000')).toBeNull();
    expect(await api.jobLogs('iris', 'j0123456789', 50)).toEqual([
      'started',
      'chunk 1'
    ]);
    expect(
      server
        .to('deployments/iris/jobs/j0123456789/logs')[0]
        .url.searchParams.get('tail')
    ).toBe('50');
  });

  it('fails with the 4xx message of a bad job', async () => {
    const server = new FakeServer().on(
      'POST',
      'deployments/iris/jobs',
      apiError(400, "unknown format 'xlsx'")
    );
    const api = new PrimeHubAPI(server.settings());
    const error = await failure(
      api.createJob('iris', { input: 'a.xlsx', output: 'b.csv' })
    );
    expect(error.status).toBe(400);
    expect(error.message).toBe("unknown format 'xlsx'");
  });
});
