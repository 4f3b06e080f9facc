/** The primehub-jupyter JupyterLab extension: model deployments from inside JupyterLab. */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { launchIcon } from '@jupyterlab/ui-components';

import { apiUrl, requestAPI } from './request';

/** The plugin's id; also the key of its settings, should it get any. */
const PLUGIN_ID = 'primehub-jupyter:plugin';

/** The command ids this extension registers. */
export namespace CommandIDs {
  export const openApiDocs = 'primehub:open-api-docs';
}

/** The command palette category of all our commands. */
const PALETTE_CATEGORY = 'Model Deployments';

/** Shown when the frontend is installed but the server extension does not answer. */
export const SERVER_EXTENSION_MISSING =
  'PrimeHub Model Deployment server extension is not enabled. ' +
  'Install it with: pip install primehub-jupyter';

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
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null) => {
    const settings = ServerConnection.makeSettings();

    app.commands.addCommand(CommandIDs.openApiDocs, {
      label: 'Model Deployments: Open API document',
      caption:
        'Open the OpenAPI document of the PrimeHub REST API in a new browser tab',
      icon: launchIcon,
      execute: () => {
        window.open(apiUrl('openapi.json', settings), '_blank', 'noopener');
      }
    });
    palette?.addItem({
      command: CommandIDs.openApiDocs,
      category: PALETTE_CATEGORY
    });

    void checkServerExtension(settings);
  }
};

export default plugin;
