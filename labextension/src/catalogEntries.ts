/**
 * What the "Service catalog" page lists: the sidebar's deployment list (kept fresh by its
 * polling and the server's change stream), and which deployment's document is shown.
 */

import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { IDeployment } from './api';
import { DeploymentListModel } from './model';

export class CatalogEntries implements IDisposable {
  constructor(
    readonly list: DeploymentListModel,
    selected: string | null = null
  ) {
    this._selected = selected;
    list.changed.connect(this._onList, this);
    this._onList();
  }

  /** The deployments the user may see, or null until the list first loaded. */
  get deployments(): readonly IDeployment[] | null {
    return this.list.state === 'loading' && this.list.all.length === 0
      ? null
      : this.list.all;
  }

  /** The list's last error ('' when it loaded). */
  get error(): string {
    return this.list.state === 'ready' ? '' : this.list.error;
  }

  /** The id of the deployment whose document is shown. */
  get selected(): string | null {
    return this._selected;
  }

  /** Emitted when the list or the selection changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Show this deployment's document. */
  select(id: string | null): void {
    if (id !== this._selected) {
      this._selected = id;
      this._changed.emit();
    }
  }

  /** Load the list now (the page's Refresh button, the page shown). */
  refresh(): Promise<void> {
    return this.list.refresh();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this.list.changed.disconnect(this._onList, this);
    Signal.clearData(this);
  }

  private _onList(): void {
    const all = this.list.all;
    // A deleted deployment's document goes with it; until a first pick, show the newest.
    // A selection not in a list that has not loaded yet is kept (a restored page).
    if (this.list.state === 'ready') {
      const known = all.some(d => d.id === this._selected);
      if (!known) {
        this._selected = all[0]?.id ?? null;
      }
    }
    this._changed.emit();
  }

  private _selected: string | null;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}
