/** The primehub-jupyter JupyterLab extension: model deployments from inside JupyterLab. */

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  InputDialog,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import {
  addIcon,
  launchIcon,
  listIcon,
  refreshIcon
} from '@jupyterlab/ui-components';

import { CatalogWidget } from './catalog';
import { deleteDeployment, startDeployment, stopDeployment } from './actions';
import { autoloadPlugin } from './autoload';
import { IDeployment, PrimeHubAPI } from './api';
import { deploymentsIcon } from './icons';
import { DeploymentListModel } from './model';
import { PhaseNotices } from './notices';
import {
  apiUrl,
  requestAPI,
  SERVER_EXTENSION_MISSING as MISSING
} from './request';
import { DeploymentDetailWidget, TabId } from './widgets/detail';
import { DeploymentFormWidget } from './widgets/form';
import { IFileOpener } from './widgets/jobs';
import { DeploymentsSidebar } from './widgets/sidebar';

/** The plugin's id; also the key of its settings, should it get any. */
const PLUGIN_ID = 'primehub-jupyter:plugin';

/** The command ids this extension registers. */
export namespace CommandIDs {
  export const openApiDocs = 'primehub:open-api-docs';
  export const openCatalog = 'primehub:open-catalog';
  export const showDeployments = 'primehub:show-deployments';
  export const create = 'primehub:create-deployment';
  export const refresh = 'primehub:refresh-deployments';
  export const open = 'primehub:open-deployment';
  export const update = 'primehub:update-deployment';
  export const stop = 'primehub:stop-deployment';
  export const start = 'primehub:start-deployment';
  export const remove = 'primehub:delete-deployment';
}

/** The command palette category of all our commands. */
const PALETTE_CATEGORY = 'Model Deployments';

/** Shown when the frontend is installed but the server extension does not answer. */
export const SERVER_EXTENSION_MISSING = MISSING;

/**
 * Probe the server extension once, telling the user when it is not enabled.
 *
 * A 404 on `primehub/api/me` means no handler is mounted there: the Python package is
 * missing from the server's environment or `jpserver_extensions` disables it.
 */
async function checkServerExtension(
  settings: ServerConnection.ISettings
): Promise<void> {
  try {
    await requestAPI<unknown>('me', {}, settings);
  } catch (error) {
    if (
      error instanceof ServerConnection.ResponseError &&
      error.response.status === 404
    ) {
      Notification.warning(SERVER_EXTENSION_MISSING, { autoClose: false });
    } else {
      console.error(
        'primehub-jupyter: the server extension did not answer',
        error
      );
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Package, deploy, monitor and invoke ML model deployments.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const api = new PrimeHubAPI(settings);
    const { commands, shell } = app;

    let sidebar: DeploymentsSidebar | null = null;
    let catalog: CatalogWidget | null = null;
    const list = new DeploymentListModel({
      api,
      // The catalog page lists the same deployments: it keeps the list fresh too.
      isVisible: () =>
        (sidebar?.isVisible ?? false) ||
        (catalog !== null && !catalog.isDisposed && catalog.isVisible)
    });
    const tracker = new WidgetTracker<DeploymentDetailWidget>({
      namespace: 'primehub-deployment'
    });
    const catalogTracker = new WidgetTracker<CatalogWidget>({
      namespace: 'primehub-catalog'
    });
    let createForm: DeploymentFormWidget | null = null;
    const updateForms = new Map<string, DeploymentFormWidget>();

    /** A job's files: opened like a double click in the file browser does. */
    const files: IFileOpener = {
      root: PageConfig.getOption('serverRoot'),
      open: async path => {
        try {
          await app.serviceManager.contents.get(path, { content: false });
        } catch {
          throw new Error(`There is no file ${path} (yet).`);
        }
        // Parquet has no viewer: show it in the file browser instead of a text editor.
        const command = /\.(parquet|pq)$/i.test(path)
          ? 'filebrowser:go-to-path'
          : 'docmanager:open';
        await commands.execute(command, { path });
      }
    };

    const detailOf = (id: string) => tracker.find(w => w.model.id === id);

    const openDeployment = (id: string, tab?: TabId) => {
      let widget = detailOf(id);
      if (!widget) {
        widget = new DeploymentDetailWidget({
          api,
          id,
          list,
          actions: {
            update: deployment => openUpdate(deployment),
            deleted: () => widget?.dispose(),
            catalog: id =>
              void commands.execute(CommandIDs.openCatalog, { id }),
            files
          }
        });
        void tracker.add(widget);
        shell.add(widget, 'main');
      }
      if (tab) {
        widget.showTab(tab);
      }
      shell.activateById(widget.id);
      return widget;
    };

    const openCreate = () => {
      if (createForm && !createForm.isDisposed) {
        shell.activateById(createForm.id);
        return createForm;
      }
      const form = new DeploymentFormWidget({
        api,
        mode: 'create',
        onSaved: deployment => {
          list.watch(deployment.id);
          list.observe(deployment);
          form.dispose();
          openDeployment(deployment.id);
        },
        onCancel: () => form.dispose()
      });
      createForm = form;
      shell.add(form, 'main');
      shell.activateById(form.id);
      return form;
    };

    const openUpdate = (deployment: IDeployment) => {
      const open = updateForms.get(deployment.id);
      if (open && !open.isDisposed) {
        shell.activateById(open.id);
        return open;
      }
      const form = new DeploymentFormWidget({
        api,
        mode: 'update',
        deployment,
        onSaved: saved => {
          list.watch(saved.id);
          form.dispose();
          const detail = openDeployment(saved.id, 'history');
          detail.model.set(saved);
        },
        onCancel: () => form.dispose()
      });
      updateForms.set(deployment.id, form);
      form.disposed.connect(() => updateForms.delete(deployment.id));
      shell.add(form, 'main');
      shell.activateById(form.id);
      return form;
    };

    /** The deployment a command is about: its `id` argument, else one the user picks. */
    const pick = async (
      args: Record<string, unknown>,
      verb: string
    ): Promise<IDeployment | null> => {
      if (typeof args.id === 'string' && args.id) {
        return api.get(args.id);
      }
      const choices = (await api.list()).map(d => ({
        label: `${d.spec.displayName} (${d.id})`,
        deployment: d
      }));
      if (choices.length === 0) {
        Notification.info('There are no deployments yet.', { autoClose: 3000 });
        return null;
      }
      const result = await InputDialog.getItem({
        title: `${verb} which deployment?`,
        items: choices.map(c => c.label)
      });
      if (!result.button.accept || result.value === null) {
        return null;
      }
      return choices.find(c => c.label === result.value)?.deployment ?? null;
    };

    const reportError = (error: unknown) => {
      Notification.error(
        error instanceof Error ? error.message : String(error),
        {
          autoClose: 5000
        }
      );
    };

    sidebar = new DeploymentsSidebar(list, {
      open: id => void openDeployment(id),
      create: () => void openCreate(),
      catalog: () => void commands.execute(CommandIDs.openCatalog)
    });
    shell.add(sidebar, 'left', { rank: 700 });
    restorer?.add(sidebar, 'primehub-deployments');

    const notices = new PhaseNotices(
      Notification,
      id => void openDeployment(id)
    );
    list.phaseChanged.connect((_, change) => notices.notify(change));

    commands.addCommand(CommandIDs.openApiDocs, {
      label: 'Model Deployments: Open API document',
      caption:
        'Open the OpenAPI document of the PrimeHub REST API in a new browser tab',
      icon: launchIcon,
      execute: () => {
        window.open(apiUrl('openapi.json', settings), '_blank', 'noopener');
      }
    });
    commands.addCommand(CommandIDs.openCatalog, {
      label: 'Model Deployments: Service catalog',
      caption:
        "Every deployment's OpenAPI document in Swagger UI, with try-it-out",
      icon: listIcon,
      execute: args => {
        const id = typeof args.id === 'string' && args.id ? args.id : null;
        if (!catalog || catalog.isDisposed) {
          const page = new CatalogWidget(api, list, id);
          // The restorer keeps the shown deployment: a reload reopens the same document.
          page.entries.changed.connect(() => void catalogTracker.save(page));
          void catalogTracker.add(page);
          shell.add(page, 'main');
          catalog = page;
        } else if (id) {
          catalog.select(id);
        }
        shell.activateById(catalog.id);
        void list.refresh();
        return catalog;
      }
    });
    commands.addCommand(CommandIDs.showDeployments, {
      label: 'Model Deployments: Show the list',
      caption: 'Show the Model Deployments sidebar',
      icon: deploymentsIcon,
      execute: () => {
        if (sidebar) {
          shell.activateById(sidebar.id);
        }
      }
    });
    commands.addCommand(CommandIDs.create, {
      label: args =>
        args.isPalette
          ? 'Model Deployments: Create a deployment'
          : 'Create a deployment',
      caption: 'Deploy a model: open the create form',
      icon: addIcon,
      execute: () => openCreate()
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Model Deployments: Refresh',
      caption: 'Reload the list of deployments',
      icon: refreshIcon,
      execute: () => list.refresh()
    });
    commands.addCommand(CommandIDs.open, {
      label: args =>
        typeof args.id === 'string'
          ? `Open ${args.id}`
          : 'Model Deployments: Open a deployment…',
      caption: 'Open the detail view of a deployment',
      icon: deploymentsIcon,
      execute: async args => {
        if (typeof args.id === 'string' && args.id) {
          return openDeployment(args.id, args.tab as TabId | undefined);
        }
        const d = await pick(args, 'Open').catch(reportError);
        return d ? openDeployment(d.id) : undefined;
      }
    });
    commands.addCommand(CommandIDs.update, {
      label: 'Model Deployments: Update a deployment…',
      caption: 'Open the update form of a deployment',
      execute: async args => {
        const d = await pick(args, 'Update').catch(reportError);
        if (d) {
          openUpdate(d);
        }
      }
    });
    commands.addCommand(CommandIDs.stop, {
      label: 'Model Deployments: Stop a deployment…',
      caption: 'Stop a deployment (its spec is kept)',
      execute: async args => {
        const d = await pick(args, 'Stop').catch(reportError);
        const done = d ? await stopDeployment(api, d) : null;
        if (done) {
          list.watch(done.id);
          list.observe(done);
          detailOf(done.id)?.model.set(done);
        }
      }
    });
    commands.addCommand(CommandIDs.start, {
      label: 'Model Deployments: Start a deployment…',
      caption: 'Start a stopped deployment',
      execute: async args => {
        const d = await pick(args, 'Start').catch(reportError);
        const done = d ? await startDeployment(api, d) : null;
        if (done) {
          list.watch(done.id);
          list.observe(done);
          detailOf(done.id)?.model.set(done);
        }
      }
    });
    commands.addCommand(CommandIDs.remove, {
      label: 'Model Deployments: Delete a deployment…',
      caption: 'Delete a deployment, after a confirmation',
      execute: async args => {
        const d = await pick(args, 'Delete').catch(reportError);
        if (d && (await deleteDeployment(api, d))) {
          list.forget(d.id);
          detailOf(d.id)?.dispose();
        }
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.showDeployments,
        CommandIDs.create,
        CommandIDs.refresh,
        CommandIDs.open,
        CommandIDs.update,
        CommandIDs.stop,
        CommandIDs.start,
        CommandIDs.remove,
        CommandIDs.openCatalog,
        CommandIDs.openApiDocs
      ]) {
        palette.addItem({
          command,
          category: PALETTE_CATEGORY,
          args: { isPalette: true }
        });
      }
    }

    if (restorer) {
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: widget => ({ id: widget.model.id }),
        name: widget => widget.model.id
      });
      void restorer.restore(catalogTracker, {
        command: CommandIDs.openCatalog,
        args: widget => ({ id: widget.selected ?? '' }),
        name: () => 'catalog'
      });
    }

    void checkServerExtension(settings);
  }
};

export default [plugin, autoloadPlugin];
