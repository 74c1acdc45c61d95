/**
 * The sidebar widget: a `ReactWidget` that renders the model's state and asks before stopping.
 */
import {
  Dialog,
  ReactWidget,
  showDialog,
  UseSignal
} from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { ElasticPanel } from './components';
import { IJob, JobsModel } from './jobs';
import { JobsSection } from './jobsSection';
import { SIDEBAR_ID, SIDEBAR_TITLE } from './constants';
import { ElasticModel, IElasticState } from './model';
import { ICluster } from './types';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 7h16v10H4zM2 9h1v2H2zm0 4h1v2H2zm19-4h1v2h-1zm0 4h1v2h-1zM7 4h2v2H7zm4 0h2v2h-2zm4 0h2v2h-2zM7 18h2v2H7zm4 0h2v2h-2zm4 0h2v2h-2z"/>
  </g>
  <g fill="#fff"><path d="M7 10h4v4H7zm6 0h4v1h-4zm0 3h3v1h-3z"/></g>
</svg>`;

/** The sidebar's icon (a GPU board). */
export const elasticIcon = new LabIcon({
  name: 'jupyter-elastic:gpu',
  svgstr: ICON_SVG
});

/** Options of `ElasticSidebar`. */
export interface IElasticSidebarOptions {
  /** The model; the sidebar disposes it with itself. */
  model: ElasticModel;
  /** Backend used by "New cluster" (read at click time: settings can change). */
  defaultBackend: () => string;
  /** Detached jobs shown below the clusters (disposed with the sidebar). */
  jobs?: JobsModel;
  /** Insert a `%gpu attach` cell for a job into the current notebook. */
  onAttachJob?: (job: IJob) => void;
}

/**
 * The "Elastic compute" panel in the left area.
 */
export class ElasticSidebar extends ReactWidget {
  /** Create the sidebar around a model. */
  constructor(options: IElasticSidebarOptions) {
    super();
    this._model = options.model;
    this._defaultBackend = options.defaultBackend;
    this._jobs = options.jobs ?? null;
    this._onAttachJob = options.onAttachJob;
    this.id = SIDEBAR_ID;
    this.addClass('elastic-Sidebar');
    this.title.icon = elasticIcon;
    this.title.caption = SIDEBAR_TITLE;
  }

  /** Opened: the model catches up at once and polls (it does not while the panel is closed). */
  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._model.setVisible(this.isVisible);
    this._jobs?.setVisible(this.isVisible);
  }

  /** Collapsed or covered by another panel: the model stops polling. */
  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._model.setVisible(this.isVisible);
    this._jobs?.setVisible(this.isVisible);
  }

  /** Attached where it can be seen (e.g. restored open): as when shown. */
  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._model.setVisible(this.isVisible);
    this._jobs?.setVisible(this.isVisible);
  }

  /** Taken off the page: as when hidden. */
  protected onAfterDetach(msg: Message): void {
    super.onAfterDetach(msg);
    this._model.setVisible(this.isVisible);
    this._jobs?.setVisible(this.isVisible);
  }

  /** The model behind the panel. */
  get model(): ElasticModel {
    return this._model;
  }

  /** Dispose the model with the widget. */
  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.dispose();
    this._jobs?.dispose();
    super.dispose();
  }

  protected render(): JSX.Element {
    return this._renderPanel();
  }

  private _renderPanel(): JSX.Element {
    return (
      <UseSignal signal={this._model.changed} initialArgs={this._model.state}>
        {(_, state?: IElasticState) => (
          <ElasticPanel
            state={state ?? this._model.state}
            defaultBackend={this._defaultBackend()}
            onCreate={() =>
              void this._model.create({ backend: this._defaultBackend() })
            }
            onScale={(cluster, n) => void this._model.scale(cluster.id, n)}
            onAdapt={(cluster, minimum, maximum) =>
              void this._model.adapt(cluster.id, minimum, maximum)
            }
            onStop={cluster => void this._confirmStop(cluster)}
            onDismissError={() => this._model.dismissError()}
            jobs={
              this._jobs && (
                <JobsSection model={this._jobs} onAttach={this._onAttachJob} />
              )
            }
          />
        )}
      </UseSignal>
    );
  }

  private async _confirmStop(cluster: ICluster): Promise<void> {
    const result = await showDialog({
      title: 'Stop cluster?',
      body:
        `Stop "${cluster.name}" (${cluster.backend}, ${cluster.workers} worker` +
        `${cluster.workers === 1 ? '' : 's'})? Its scheduler and workers shut down and ` +
        'cells running on it fail.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (result.button.accept) {
      await this._model.stop(cluster.id);
    }
  }

  private _model: ElasticModel;
  private _defaultBackend: () => string;
  private _jobs: JobsModel | null;
  private _onAttachJob: ((job: IJob) => void) | undefined;
}
