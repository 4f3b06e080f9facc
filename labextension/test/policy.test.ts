import { describe, expect, it } from 'vitest';

import {
  emptyForm,
  fieldErrorsOf,
  fieldOfPath,
  formFromDeployment,
  toCreateRequest,
  toUpdatePatch
} from '../src/form';
import {
  joinNames,
  policyOf,
  policySummary,
  splitNames,
  toggleName
} from '../src/policy';
import { APIError } from '../src/request';
import { deployment } from './helpers';

describe('policy fields', () => {
  it('parses comma lists: trimmed, no blanks, no repeats, in order', () => {
    expect(splitNames(' ml, data-science ,,ml\nops ', 'groups')).toEqual([
      'ml',
      'data-science',
      'ops'
    ]);
    // Groups are single words: spaces separate them too; a user name keeps its spaces.
    expect(splitNames('ml ops', 'groups')).toEqual(['ml', 'ops']);
    expect(
      splitNames('Ada Lovelace, bob@example.com,\n bob@example.com', 'users')
    ).toEqual(['Ada Lovelace', 'bob@example.com']);
    expect(joinNames(['a', 'b'])).toBe('a, b');
    expect(joinNames(undefined)).toBe('');
  });

  it('is no policy when both lists are empty', () => {
    expect(policyOf(' , ', '')).toBeNull();
    expect(policyOf('alice', '')).toEqual({ users: ['alice'], groups: [] });
    expect(policyOf('', 'ml,ops')).toEqual({
      users: [],
      groups: ['ml', 'ops']
    });
  });

  it('ticks and unticks a group in the typed list', () => {
    expect(toggleName('ml, ops', 'default', true)).toBe('ml, ops, default');
    expect(toggleName('ml, default, ops', 'default', false)).toBe('ml, ops');
    expect(toggleName('default', 'default', true)).toBe('default');
  });

  it('sends the policy of a private endpoint on create, and omits an empty one', () => {
    const base = {
      ...emptyForm([], 'ab12c'),
      displayName: 'Iris',
      id: 'iris-ab12c',
      groupName: 'default',
      instanceType: 'cpu-0.5',
      modelURI: '/b',
      privateAccess: true
    };
    expect(toCreateRequest(base).spec.endpoint).toEqual({
      accessType: 'private'
    });
    const withPolicy = {
      ...base,
      policyGroups: 'default, ml',
      policyUsers: 'bob'
    };
    expect(toCreateRequest(withPolicy).spec.endpoint).toEqual({
      accessType: 'private',
      policy: { users: ['bob'], groups: ['default', 'ml'] }
    });
    // A public endpoint ignores a policy: none is sent.
    expect(
      toCreateRequest({ ...withPolicy, privateAccess: false }).spec.endpoint
    ).toEqual({
      accessType: 'public'
    });
  });

  it('round-trips a policy through the update form, and clears it with null', () => {
    const d = deployment('iris');
    d.spec.endpoint = {
      accessType: 'private',
      clients: [],
      policy: { users: ['bob'], groups: ['default', 'ml'] }
    };
    const form = formFromDeployment(d);
    expect(form.policyUsers).toBe('bob');
    expect(form.policyGroups).toBe('default, ml');
    const same = toUpdatePatch(form, d) as { endpoint: unknown };
    expect(same.endpoint).toEqual({
      accessType: 'private',
      policy: { users: ['bob'], groups: ['default', 'ml'] }
    });
    const emptied = toUpdatePatch(
      { ...form, policyUsers: '', policyGroups: ' ' },
      d
    ) as {
      endpoint: unknown;
    };
    expect(emptied.endpoint).toEqual({ accessType: 'private', policy: null });
    const opened = toUpdatePatch({ ...form, privateAccess: false }, d) as {
      endpoint: unknown;
    };
    expect(opened.endpoint).toEqual({ accessType: 'public', policy: null });
  });

  it('shows a 422 on the policy field it names', () => {
    expect(fieldOfPath('spec.endpoint.policy.groups')).toBe('policyGroups');
    expect(fieldOfPath('spec.endpoint.policy.groups.1')).toBe('policyGroups');
    expect(fieldOfPath('spec.endpoint.policy.users.0')).toBe('policyUsers');
    expect(fieldOfPath('spec.endpoint.policy')).toBe('policyGroups');
    const error = new APIError(
      new Response('{}', { status: 422 }),
      "unknown groups in the policy: 'nope'",
      'Invalid',
      [
        {
          field: 'spec.endpoint.policy.groups',
          message: "unknown group 'nope'"
        }
      ]
    );
    expect(fieldErrorsOf(error, 'create')).toEqual({
      policyGroups: "unknown groups in the policy: 'nope'"
    });
  });

  it('says who may call in the Information tab', () => {
    const d = deployment('iris');
    expect(policySummary(d)).toBeNull();
    d.spec.endpoint = { accessType: 'private', clients: [] };
    expect(policySummary(d)).toBe('Members of the group default (no policy)');
    d.spec.endpoint.policy = { users: ['bob', 'carol'], groups: ['ml'] };
    expect(policySummary(d)).toBe('Users: bob, carol; Groups: ml');
    d.spec.endpoint.policy = { users: [], groups: ['ml'] };
    expect(policySummary(d)).toBe('Groups: ml');
  });
});
