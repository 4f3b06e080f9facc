/** The Compare view's words: rows of a comparison report, the test's verdict, promote's question. */

import type { IComparison, IDeployment, IPredictorComparison } from './api';

/** One predictor as the table shows it: every cell a string. */
export interface ICompareRow {
  name: string;
  role: IPredictorComparison['role'];
  traffic: string;
  requests: string;
  errorRate: string;
  p50: string;
  p99: string;
  feedback: string;
  meanReward: string;
  success: string;
  verdict: string;
  /** The challenger's test came out significant (the row is highlighted). */
  significant: boolean;
}

function percent(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined
    ? '-'
    : `${(value * 100).toFixed(digits)}%`;
}

function ms(value: number | null | undefined): string {
  return value === null || value === undefined
    ? '-'
    : `${Number((value * 1000).toPrecision(3))}`;
}

/** The last column: the test's result for a challenger, the diff share for a shadow. */
export function verdict(row: IPredictorComparison): string {
  if (row.role === 'shadow') {
    return row.compared
      ? `differs in ${percent(row.differedShare)} of ${row.compared} answers`
      : 'no answers compared yet';
  }
  const test = row.test;
  if (!test) {
    return '-';
  }
  if (!test.enoughData || test.pValue === null) {
    return 'not enough data';
  }
  const word = test.significant ? 'significant' : 'not significant';
  const points =
    test.difference === null
      ? ''
      : `, ${test.difference >= 0 ? '+' : ''}${(test.difference * 100).toFixed(1)} points`;
  return `p = ${Number(test.pValue.toPrecision(3))}, ${word}${points}`;
}

/** The table's rows, primary first (the server's order). */
export function compareRows(report: IComparison): ICompareRow[] {
  return report.predictors.map(row => ({
    name: row.name,
    role: row.role,
    traffic: row.role === 'shadow' ? 'copy' : `${row.traffic}%`,
    requests: String(row.requests),
    errorRate: percent(row.errorRate),
    p50: ms(row.latencyP50),
    p99: ms(row.latencyP99),
    feedback: String(row.feedback),
    meanReward:
      row.meanReward === null
        ? '-'
        : `${Number(row.meanReward.toPrecision(3))}`,
    success: percent(row.successRate),
    verdict: verdict(row),
    significant: Boolean(row.test?.significant)
  }));
}

/** Whether a deployment has something to compare: more than one predictor. */
export function canCompare(deployment: IDeployment | null): boolean {
  return (deployment?.spec.predictors.length ?? 0) > 1;
}

/** The predictors promote accepts: every answering one (a shadow never answers). */
export function promotable(report: IComparison): string[] {
  return report.predictors.filter(p => p.role !== 'shadow').map(p => p.name);
}

/** The confirmation's sentence before promoting `name`. */
export function promoteQuestion(report: IComparison, name: string): string {
  const others = report.predictors
    .map(p => p.name)
    .filter(other => other !== name);
  const removed = others.length ? ` and remove ${others.join(', ')}` : '';
  return (
    `Send every request of ${report.deploymentId} to ${name}${removed}? ` +
    'The history keeps the split: a roll back to the revision before brings it back.'
  );
}
