/**
 * The toolkit copies the VS Code theme's colours into its design tokens from a `load` listener that
 * it adds while its module is evaluated. Here the toolkit arrives in the second bundle, after the
 * page's `load` event, so that listener would never run: its components (and all text inside its
 * panels) would keep the toolkit's built-in dark-theme defaults, unreadable in a light theme.
 * Imported before the toolkit: until `lateLoadDone()`, a `load` listener added to a page that has
 * already loaded runs on the next task, as if the event came now.
 */
const add = window.addEventListener;
let patched = false;

if (document.readyState === 'complete') {
  patched = true;
  window.addEventListener = function (this: Window, type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions) {
    if (type === 'load' && listener) {
      const ev = new Event('load');
      setTimeout(() => (typeof listener === 'function' ? listener.call(window, ev) : listener.handleEvent(ev)), 0);
      return;
    }
    add.call(this, type, listener, options);
  } as typeof window.addEventListener;
}

/** Puts the window's own addEventListener back (once the toolkit is registered). */
export function lateLoadDone(): void {
  if (patched) window.addEventListener = add;
  patched = false;
}
