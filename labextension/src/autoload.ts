/** Loads the PrimeHub magics into every Python kernel the server runs, without `%load_ext`. */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Kernel, KernelMessage } from '@jupyterlab/services';

/**
 * What a kernel runs, silently (no output, no history, no execution count), once it is ready
 * and again after each restart. `load_extension` is a no-op when `%load_ext` already ran, and a
 * kernel whose environment lacks the package is left as it is.
 */
export const LOAD_MAGICS = [
  'try:',
  '    get_ipython().extension_manager.load_extension("primehub_jupyter")',
  'except Exception:',
  '    pass'
].join('\n');

/** Whether a kernel's language is one our magics run in. */
export function isPython(info: KernelMessage.IInfoReply | undefined): boolean {
  const name = info?.language_info?.name ?? '';
  return name.toLowerCase() === 'python';
}

/** Statuses a kernel passes through before it is a fresh process that needs the magics. */
const FRESH = new Set<Kernel.Status>([
  'starting',
  'restarting',
  'autorestarting'
]);

/**
 * Watches one running kernel through its own connection and loads the magics whenever the
 * kernel becomes idle after a (re)start.
 */
class KernelWatcher {
  constructor(private readonly connection: Kernel.IKernelConnection) {
    connection.statusChanged.connect(this._onStatus, this);
    void this._load();
  }

  dispose(): void {
    this.connection.statusChanged.disconnect(this._onStatus, this);
    this.connection.dispose();
  }

  private _onStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (FRESH.has(status)) {
      this._pending = true;
    } else if (status === 'idle' && this._pending) {
      this._pending = false;
      void this._load();
    }
  }

  private async _load(): Promise<void> {
    try {
      const info = await this.connection.info;
      if (!isPython(info)) {
        return;
      }
      await this.connection.requestExecute({
        code: LOAD_MAGICS,
        silent: true,
        store_history: false,
        allow_stdin: false
      }).done;
    } catch (error) {
      // A kernel that died or went away: nothing to load into.
      console.debug('primehub-jupyter: magics not loaded', error);
    }
  }

  private _pending = false;
}

export const autoloadPlugin: JupyterFrontEndPlugin<void> = {
  id: 'primehub-jupyter:autoload-magics',
  description:
    'Makes %deploy, %phdeploy and %phlogs available in every Python kernel.',
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
    const kernels = app.serviceManager.kernels;
    const watchers = new Map<string, KernelWatcher>();
    const sync = (): void => {
      const running = new Set<string>();
      for (const model of kernels.running()) {
        running.add(model.id);
        if (!watchers.has(model.id)) {
          const connection = kernels.connectTo({ model, handleComms: false });
          watchers.set(model.id, new KernelWatcher(connection));
        }
      }
      for (const [id, watcher] of watchers) {
        if (!running.has(id)) {
          watcher.dispose();
          watchers.delete(id);
        }
      }
    };
    kernels.runningChanged.connect(sync);
    // Sessions start kernels; refreshing here notices a new kernel without waiting for the poll.
    app.serviceManager.sessions.runningChanged.connect(() => {
      void kernels.refreshRunning().then(sync);
    });
    void kernels.ready.then(sync);
  }
};
