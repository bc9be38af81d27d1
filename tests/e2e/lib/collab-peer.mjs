// A stock y-websocket client in a process of its own (run by spawnPeer in lib/collab.mjs):
//   node lib/collab-peer.mjs '{"url":"ws://…/collab/W","docName":"d","token":"…","state":{…}}'
// Syncs, sets its awareness state, prints `{"clientID":N}` and stays until it is killed
// (the tests kill it with SIGKILL, so it never says goodbye).

import WebSocket from "ws";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";

const { url, docName, token, state } = JSON.parse(process.argv[2]);
const doc = new Y.Doc();
const provider = new WebsocketProvider(url, docName, doc, {
  WebSocketPolyfill: WebSocket,
  params: { token },
  disableBc: true,
});
provider.awareness.setLocalState(state);
const giveUp = setTimeout(() => {
  console.error("collab-peer: not synced within 10 s");
  process.exit(1);
}, 10_000);
let announced = false;
provider.on("sync", (isSynced) => {
  if (!isSynced || announced) return;
  announced = true;
  clearTimeout(giveUp);
  console.log(JSON.stringify({ clientID: doc.clientID }));
});
