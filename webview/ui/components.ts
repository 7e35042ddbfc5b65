/**
 * Registers the component toolkit (@vscode/webview-ui-toolkit today): about 330 KB of the webview's
 * code, so it lives in the second bundle (webview/rest.ts), loaded once the first frame is on screen.
 * Elements made before (by ./index.ts, by tag name) are upgraded when this runs.
 */
// First: the toolkit's theme listener must see a page that has already loaded (see toolkitTheme.ts).
import { lateLoadDone } from './toolkitTheme';
import {
  provideVSCodeDesignSystem, vsCodeBadge, vsCodeButton, vsCodeDataGrid, vsCodeDataGridCell, vsCodeDataGridRow,
  vsCodeDivider, vsCodeDropdown, vsCodeOption, vsCodePanels, vsCodePanelTab, vsCodePanelView, vsCodeTextField,
} from '@vscode/webview-ui-toolkit';

let registered = false;

export function registerComponents(): void {
  if (registered) return;
  registered = true;
  provideVSCodeDesignSystem().register(
    vsCodeBadge(), vsCodeButton(), vsCodeDataGrid(), vsCodeDataGridCell(), vsCodeDataGridRow(), vsCodeDivider(),
    vsCodeDropdown(), vsCodeOption(), vsCodePanels(), vsCodePanelTab(), vsCodePanelView(), vsCodeTextField(),
  );
  lateLoadDone();
}
