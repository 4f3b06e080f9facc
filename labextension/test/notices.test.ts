import { describe, expect, it } from 'vitest';

import { INotifier, PhaseNotices } from '../src/notices';
import { deployment } from './helpers';

class Recorder implements INotifier {
  shown: { id: string; kind: string; message: string; sticky: boolean }[] = [];
  dismissed: string[] = [];
  success(message: string, options?: { autoClose?: number | false }): string {
    return this.add('success', message, options?.autoClose === false);
  }
  error(message: string, options?: { autoClose?: number | false }): string {
    return this.add('error', message, options?.autoClose === false);
  }
  dismiss(id?: string): void {
    this.dismissed.push(id ?? '');
  }
  private add(kind: string, message: string, sticky: boolean): string {
    const id = `toast-${this.shown.length}`;
    this.shown.push({ id, kind, message, sticky });
    return id;
  }
}

describe('phase notices', () => {
  it('dismisses the sticky Failed toast and says so when the deployment recovers', () => {
    const toasts = new Recorder();
    const notices = new PhaseNotices(toasts);
    const failed = deployment('iris-1', 'Failed');
    failed.status.message = 'group disabled';
    notices.notify({ deployment: failed, previous: 'Deployed' });
    expect(toasts.shown[0]).toMatchObject({ kind: 'error', sticky: true });
    expect(toasts.shown[0].message).toContain('Failed: group disabled');
    expect(notices.failed.get('iris-1')).toBe('toast-0');

    notices.notify({
      deployment: deployment('iris-1', 'Deployed'),
      previous: 'Deploying'
    });
    expect(toasts.dismissed).toEqual(['toast-0']);
    expect(toasts.shown[1]).toMatchObject({ kind: 'success', sticky: false });
    expect(toasts.shown[1].message).toContain('recovered');
    expect(notices.failed.size).toBe(0);
  });

  it('says Deployed plainly without an earlier failure, and keeps one Failed toast each', () => {
    const toasts = new Recorder();
    const notices = new PhaseNotices(toasts);
    notices.notify({
      deployment: deployment('a', 'Deployed'),
      previous: 'Deploying'
    });
    expect(toasts.shown[0].message).toMatch(/is Deployed\.$/);
    notices.notify({
      deployment: deployment('b', 'Failed'),
      previous: 'Deployed'
    });
    notices.notify({
      deployment: deployment('b', 'Failed'),
      previous: 'Deploying'
    });
    expect(toasts.dismissed).toEqual(['toast-1']);
    expect(notices.failed.get('b')).toBe('toast-2');
  });
});
