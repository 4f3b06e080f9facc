/** The extension's icon: a model cube going up, drawn in the theme's icon colour. */

import { LabIcon } from '@jupyterlab/ui-components';

const DEPLOY_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 1.5 3.5 6.2v9.6L12 20.5l8.5-4.7V6.2L12 1.5Zm0 2.3 6 3.3-6 3.3-6-3.3 6-3.3Zm-6.5 5 5.5 3v6.6l-5.5-3V8.8Zm7.5 9.6v-6.6l5.5-3v6.6l-5.5 3Z"/>
    <path d="M12 21.2 9.2 23.5h5.6L12 21.2Z"/>
  </g>
</svg>`;

export const deploymentsIcon = new LabIcon({
  name: 'primehub-jupyter:deployments',
  svgstr: DEPLOY_SVG
});
