/** Stop, Start and Delete, each after a confirmation dialog; shared by views and commands. */

import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';

import { IDeployment, PrimeHubAPI } from './api';

async function confirm(
  title: string,
  body: string,
  label: string,
  warn: boolean
) {
  const result = await showDialog({
    title,
    body,
    buttons: [
      Dialog.cancelButton(),
      warn ? Dialog.warnButton({ label }) : Dialog.okButton({ label })
    ]
  });
  return result.button.accept;
}

function fail(what: string, error: unknown): null {
  // The API's message is a sentence a person can act on: show it as is.
  Notification.error(
    `${what}: ${error instanceof Error ? error.message : String(error)}`,
    {
      autoClose: false
    }
  );
  return null;
}

/** Stop a deployment after the user confirms; its answer, or null. */
export async function stopDeployment(
  api: PrimeHubAPI,
  deployment: IDeployment
): Promise<IDeployment | null> {
  const name = deployment.spec.displayName;
  const ok = await confirm(
    `Stop ${name}?`,
    `The replicas of "${name}" stop and its endpoint answers 503 until you start it again. ` +
      'Its spec, clients and history are kept.',
    'Stop',
    true
  );
  if (!ok) {
    return null;
  }
  try {
    return await api.stop(deployment.id);
  } catch (error) {
    return fail(`Could not stop ${name}`, error);
  }
}

/** Start a stopped deployment after the user confirms; its answer, or null. */
export async function startDeployment(
  api: PrimeHubAPI,
  deployment: IDeployment
): Promise<IDeployment | null> {
  const name = deployment.spec.displayName;
  const ok = await confirm(
    `Start ${name}?`,
    `"${name}" is deployed again with its current spec.`,
    'Start',
    false
  );
  if (!ok) {
    return null;
  }
  try {
    return await api.start(deployment.id);
  } catch (error) {
    return fail(`Could not start ${name}`, error);
  }
}

/** Delete a deployment after the user confirms; whether it was deleted. */
export async function deleteDeployment(
  api: PrimeHubAPI,
  deployment: IDeployment
): Promise<boolean> {
  const name = deployment.spec.displayName;
  const ok = await confirm(
    `Delete ${name}?`,
    `"${name}" (${deployment.id}) stops serving and is deleted with its clients and ` +
      'history. This cannot be undone.',
    'Delete',
    true
  );
  if (!ok) {
    return false;
  }
  try {
    await api.delete(deployment.id);
    return true;
  } catch (error) {
    fail(`Could not delete ${name}`, error);
    return false;
  }
}
