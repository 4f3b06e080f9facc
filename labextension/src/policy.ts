/** A private endpoint's access policy as the form types it: comma lists of users and groups. */

import { IAccessPolicy, IDeployment } from './api';

/**
 * The names of a comma list, trimmed, without blanks and repeats, in the order typed.
 * Groups are names without spaces, so spaces separate them too; a user name may hold one
 * (an identity provider's display form), so users are separated by commas and new lines only.
 */
export function splitNames(text: string, kind: 'users' | 'groups'): string[] {
  const parts = text.split(kind === 'groups' ? /[,\s]+/ : /[,\n]+/);
  const seen = new Set<string>();
  const out: string[] = [];
  for (const part of parts) {
    const name = part.trim();
    if (name && !seen.has(name)) {
      seen.add(name);
      out.push(name);
    }
  }
  return out;
}

/** The names as the form's text field shows them: `a, b`. */
export function joinNames(names: readonly string[] | undefined): string {
  return (names ?? []).join(', ');
}

/** `spec.endpoint.policy` of the form's fields, or null when both are empty (no policy). */
export function policyOf(users: string, groups: string): IAccessPolicy | null {
  const policy = {
    users: splitNames(users, 'users'),
    groups: splitNames(groups, 'groups')
  };
  return policy.users.length || policy.groups.length ? policy : null;
}

/** The groups text with `name` added (at the end) or removed, for the group check boxes. */
export function toggleName(text: string, name: string, on: boolean): string {
  const names = splitNames(text, 'groups').filter(other => other !== name);
  if (on) {
    names.push(name);
  }
  return joinNames(names);
}

/**
 * Who may call a deployment with a bearer token, in words: the policy's users and groups, or
 * the deployment's group when it has none; null for a public endpoint.
 */
export function policySummary(deployment: IDeployment): string | null {
  const endpoint = deployment.spec.endpoint;
  if (endpoint?.accessType !== 'private') {
    return null;
  }
  const policy = endpoint.policy;
  const users = policy?.users ?? [];
  const groups = policy?.groups ?? [];
  if (!users.length && !groups.length) {
    return `Members of the group ${deployment.spec.groupName} (no policy)`;
  }
  const parts: string[] = [];
  if (users.length) {
    parts.push(`Users: ${joinNames(users)}`);
  }
  if (groups.length) {
    parts.push(`Groups: ${joinNames(groups)}`);
  }
  return parts.join('; ');
}
