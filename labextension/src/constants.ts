/**
 * Ids and names the extension is known by: plugin, sidebar panel, commands.
 */

/** Plugin id, also the settings-schema id (`labextension/schema/plugin.json`). */
export const PLUGIN_ID = 'jupyter-elastic:plugin';

/** DOM id of the sidebar panel. */
export const SIDEBAR_ID = 'jupyter-elastic-sidebar';

/** Title of the sidebar panel. */
export const SIDEBAR_TITLE = 'Elastic compute';

/** Command ids. */
export namespace CommandIDs {
  /** Insert a `%%gpu` cell below the active cell of the current notebook. */
  export const insertGpuCell = 'jupyter-elastic:insert-gpu-cell';
  /** Open the Elastic compute sidebar. */
  export const openSidebar = 'jupyter-elastic:open-sidebar';
  /** Insert a `%gpu attach ID` cell (args: `{ id }`) below the active cell. */
  export const insertAttachCell = 'jupyter-elastic:insert-attach-cell';
  /** Refresh the sidebar now. */
  export const refresh = 'jupyter-elastic:refresh';
}
