/**
 * jupyter-elastic's JupyterLab plugin: the "Elastic compute" sidebar, its settings and the
 * "Insert %%gpu cell" command.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { CommandIDs, PLUGIN_ID } from './constants';
import { JobsModel } from './jobs';
import { ElasticModel } from './model';
import { PrewarmWatcher } from './prewarm';
import { requestAPI } from './request';
import { Backend, RequestFn } from './types';
import { elasticIcon, ElasticSidebar } from './widget';

/** User settings from the Settings Editor (`labextension/schema/plugin.json`). */
export interface IElasticSettings {
  /** Seconds between refreshes while the page is visible. */
  refreshInterval: number;
  /** Backend of clusters started with the panel's "New cluster" button. */
  defaultBackend: Backend;
}

const DEFAULTS: IElasticSettings = {
  refreshInterval: 2,
  defaultBackend: 'local'
};

/** Source of the cell the command inserts. */
export const GPU_CELL_SOURCE = '%%gpu\n';
/** Start of the cell "Insert attach cell" adds (the job id follows). */
export const ATTACH_CELL_SOURCE = '%gpu attach ';
/** Source of the cell that loads the magics, inserted once when a notebook lacks it. */
export const LOAD_EXT_SOURCE = '%load_ext jupyter_elastic';

/**
 * The sidebar plugin.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Elastic compute sidebar: clusters, workers, GPUs, idle countdown, cost, %%gpu history.',
  autoStart: true,
  optional: [
    ISettingRegistry,
    ICommandPalette,
    INotebookTracker,
    ILayoutRestorer
  ],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    restorer: ILayoutRestorer | null
  ) => {
    const serverSettings = app.serviceManager.serverSettings;
    const request: RequestFn = <T>(path: string, init?: RequestInit) =>
      requestAPI<T>(path, init ?? {}, serverSettings);
    let settings: IElasticSettings = { ...DEFAULTS };
    // The panel starts collapsed: the model polls once the sidebar says it is shown.
    const model = new ElasticModel({
      request,
      refreshInterval: settings.refreshInterval,
      visible: false
    });
    const sidebar = new ElasticSidebar({
      model,
      defaultBackend: () => settings.defaultBackend,
      jobs: new JobsModel({ request, visible: false }),
      onAttachJob: job =>
        void app.commands.execute(CommandIDs.insertAttachCell, { id: job.id })
    });
    app.shell.add(sidebar, 'left', { rank: 250 });
    restorer?.add(sidebar, sidebar.id);

    if (settingRegistry) {
      const apply = (loaded: ISettingRegistry.ISettings) => {
        settings = {
          ...DEFAULTS,
          ...(loaded.composite as unknown as Partial<IElasticSettings>)
        };
        model.refreshInterval = settings.refreshInterval;
        sidebar.update();
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => {
          apply(loaded);
          loaded.changed.connect(apply);
        })
        .catch(reason =>
          console.error('jupyter-elastic: could not load settings', reason)
        );
    }

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'Show Elastic Compute',
      icon: elasticIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Elastic Compute',
      execute: () => model.refresh()
    });
    /** Insert a cell with `source` below the active one (and `%load_ext` first if needed). */
    const insertCell = (source: string): void => {
      const panel = notebooks?.currentWidget;
      if (!panel) {
        return;
      }
      const notebook = panel.content;
      const sources = (panel.model?.sharedModel.cells ?? []).map(c =>
        c.getSource()
      );
      if (!sources.some(text => text.includes(LOAD_EXT_SOURCE))) {
        // The magics need the extension loaded first (the "elastic" kernel does it itself).
        const index = notebook.activeCellIndex;
        notebook.activeCellIndex = 0;
        NotebookActions.insertAbove(notebook);
        notebook.activeCell?.model.sharedModel.setSource(LOAD_EXT_SOURCE);
        notebook.activeCellIndex = index + 1;
      }
      NotebookActions.insertBelow(notebook);
      notebook.activeCell?.model.sharedModel.setSource(source);
      notebook.mode = 'edit';
    };
    app.commands.addCommand(CommandIDs.insertGpuCell, {
      label: 'Insert %%gpu Cell',
      caption: 'Insert a cell that runs on an elastic GPU worker',
      icon: elasticIcon,
      isEnabled: () => !!notebooks?.currentWidget,
      execute: () => insertCell(GPU_CELL_SOURCE)
    });
    app.commands.addCommand(CommandIDs.insertAttachCell, {
      label: args => `Insert %gpu attach ${String(args.id ?? '')} Cell`,
      caption:
        'Insert a cell that follows a detached job and binds its results',
      isEnabled: () => !!notebooks?.currentWidget,
      execute: args => {
        const id = String(args.id ?? '');
        if (/^[a-z0-9][a-z0-9-]{0,63}$/.test(id)) {
          insertCell(`${ATTACH_CELL_SOURCE}${id}`);
        }
      }
    });
    // The first %%gpu cell typed into a notebook starts its scheduler on the server.
    notebooks?.widgetAdded.connect((_, panel) => {
      void panel.context.ready.then(() => {
        const model = panel.model;
        if (!model || panel.isDisposed) {
          return;
        }
        const watcher = new PrewarmWatcher(request, {
          path: () => panel.context.path,
          sources: () => model.sharedModel.cells.map(cell => cell.getSource())
        });
        if (watcher.done) {
          return;
        }
        const changed = () => watcher.changed();
        model.contentChanged.connect(changed);
        panel.disposed.connect(() => {
          model.contentChanged.disconnect(changed);
          watcher.dispose();
        });
      });
    });
    // The command is enabled only with a current notebook: let menus and the palette know.
    notebooks?.currentChanged.connect(() => {
      app.commands.notifyCommandChanged(CommandIDs.insertGpuCell);
      app.commands.notifyCommandChanged(CommandIDs.insertAttachCell);
    });
    palette?.addItem({
      command: CommandIDs.insertGpuCell,
      category: 'Elastic Compute'
    });
    palette?.addItem({
      command: CommandIDs.openSidebar,
      category: 'Elastic Compute'
    });
    palette?.addItem({
      command: CommandIDs.refresh,
      category: 'Elastic Compute'
    });
  }
};

export default plugin;
