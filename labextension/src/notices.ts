/** Notifications of deployments reaching Deployed or Failed, with recovery after a failure. */

import type { Notification } from '@jupyterlab/apputils';
import type { ReadonlyJSONValue } from '@lumino/coreutils';

import type { IPhaseChange } from './model';

/** The part of JupyterLab's `Notification` this module uses (tests pass their own). */
export interface INotifier {
  success(
    message: string,
    options?: Notification.IOptions<ReadonlyJSONValue>
  ): string;
  error(
    message: string,
    options?: Notification.IOptions<ReadonlyJSONValue>
  ): string;
  dismiss(id?: string): void;
}

/**
 * Shows a toast per phase change: Deployed (closes by itself) or Failed (sticky, until the
 * deployment recovers: then the Failed toast is dismissed and a recovery notice shown).
 */
export class PhaseNotices {
  constructor(
    private readonly notifier: INotifier,
    private readonly open: (id: string) => void = () => undefined
  ) {}

  /** Show the notice of one phase change. */
  notify(change: IPhaseChange): void {
    const d = change.deployment;
    const name = d.spec.displayName;
    const actions = [
      {
        label: 'Open',
        caption: `Open ${name}`,
        callback: () => this.open(d.id)
      }
    ];
    const failed = this._failed.get(d.id);
    if (d.status.phase === 'Deployed') {
      if (failed !== undefined) {
        this.notifier.dismiss(failed);
        this._failed.delete(d.id);
        this.notifier.success(
          `Deployment "${name}" recovered: it is Deployed again.`,
          { autoClose: 5000, actions }
        );
        return;
      }
      this.notifier.success(`Deployment "${name}" is Deployed.`, {
        autoClose: 5000,
        actions
      });
      return;
    }
    if (failed !== undefined) {
      this.notifier.dismiss(failed); // one sticky toast per deployment, the latest reason
    }
    const message = d.status.message ? `: ${d.status.message}` : '.';
    this._failed.set(
      d.id,
      this.notifier.error(`Deployment "${name}" Failed${message}`, {
        autoClose: false,
        actions
      })
    );
  }

  /** The ids of the sticky Failed toasts still shown, by deployment id. */
  get failed(): ReadonlyMap<string, string> {
    return this._failed;
  }

  private _failed = new Map<string, string>();
}
