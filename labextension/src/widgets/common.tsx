/** Small React pieces shared by the sidebar, the form and the detail view. */

import { Clipboard } from '@jupyterlab/apputils';
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

import { phaseClass } from '../format';

/** Re-render when a signal fires (a hook over Lumino signals). */
export function useSignal(signal: ISignal<unknown, unknown> | null): number {
  const [count, setCount] = React.useState(0);
  React.useEffect(() => {
    if (!signal) {
      return;
    }
    const slot = () => setCount(c => c + 1);
    signal.connect(slot);
    return () => {
      signal.disconnect(slot);
    };
  }, [signal]);
  return count;
}

/** The coloured phase of a deployment (Deployed green, Failed red, ...). */
export function PhaseBadge(props: { phase: string }): JSX.Element {
  return (
    <span className={`jp-PrimeHub-badge ${phaseClass(props.phase)}`}>
      <span className="jp-PrimeHub-dot" aria-hidden="true" />
      {props.phase}
    </span>
  );
}

/** A button that copies `text` and says so for a moment. */
export function CopyButton(props: {
  text: string;
  label?: string;
  ariaLabel?: string;
  className?: string;
}): JSX.Element {
  const [copied, setCopied] = React.useState(false);
  React.useEffect(() => {
    if (!copied) {
      return;
    }
    const timer = window.setTimeout(() => setCopied(false), 1500);
    return () => window.clearTimeout(timer);
  }, [copied]);
  return (
    <button
      type="button"
      className={`jp-PrimeHub-button ${props.className ?? ''}`}
      aria-label={props.ariaLabel ?? props.label ?? 'Copy'}
      onClick={() => {
        Clipboard.copyToSystem(props.text);
        setCopied(true);
      }}
    >
      {copied ? 'Copied' : (props.label ?? 'Copy')}
    </button>
  );
}

/** A message a person can act on, in the error colour. */
export function ErrorMessage(props: {
  message: string;
  id?: string;
}): JSX.Element | null {
  if (!props.message) {
    return null;
  }
  return (
    <div className="jp-PrimeHub-error" role="alert" id={props.id}>
      {props.message}
    </div>
  );
}

/** Message of anything thrown. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A `<pre>` with a copy button, for commands and tokens. */
export function CodeBlock(props: { code: string; label: string }): JSX.Element {
  return (
    <div className="jp-PrimeHub-code">
      <pre aria-label={props.label} tabIndex={0}>
        {props.code}
      </pre>
      <CopyButton text={props.code} ariaLabel={`Copy ${props.label}`} />
    </div>
  );
}
