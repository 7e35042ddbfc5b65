/**
 * The webview's second bundle (dist/webview-rest.js): the component toolkit and every view past the
 * overview. webview/main.ts draws the first frame without it and loads it once that frame is on
 * screen (or at once when a message needs these views); its exports become `__diskimgRest`.
 */
export { registerComponents } from './ui/components';
export { HeaderView } from './views/header';
export { ChainView } from './views/chain';
export { BlocksView, WriteFlash } from './views/blocks';
export { LiveStrip, TimelineView } from './views/timeline';
