/**
 * The one way the sidebar talks to the server: `requestAPI<T>()`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Path of the REST API under the server's base URL. */
export const API_PATH = 'jupyter-elastic/api';

/**
 * Call the jupyter-elastic REST API and decode the JSON reply.
 *
 * Uses the app's `serverSettings` (token, XSRF cookie, base URL). A failed request rejects
 * with `ServerConnection.ResponseError` carrying the server's `message`; a network failure
 * with `ServerConnection.NetworkError`. A 204 resolves to `undefined`.
 *
 * @param endPoint - path below `{base_url}jupyter-elastic/api/`, e.g. `clusters/abc/scale`
 * @param init - fetch options (method, body)
 * @param settings - server connection settings of the app
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PATH, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = undefined;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const message =
      data && typeof data === 'object' && data.message
        ? String(data.message)
        : `${response.status} ${response.statusText}`;
    throw new ServerConnection.ResponseError(response, message);
  }
  return data as T;
}
