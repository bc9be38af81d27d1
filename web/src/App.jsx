// The demo page: pick a demo user (tokens from GET /api/dev/demo), then chat,
// presence, typing, notifications and a shared editor in one workspace.
// The chosen user and workspace live in the URL (?user=alice&workspace=demo),
// so a reload keeps them and a link opens the page as someone else.

import { useCallback, useEffect, useState } from "react";
import { TEAM, hrefFor, loadDemo } from "./demo.js";
import Session from "./components/Session.jsx";
import Welcome from "./components/Welcome.jsx";

function readLocation() {
  const params = new URLSearchParams(window.location.search);
  return { user: params.get("user"), workspace: params.get("workspace") };
}

export default function App() {
  const [demo, setDemo] = useState(null);
  const [error, setError] = useState(null);
  const [location, setLocation] = useState(readLocation);

  useEffect(() => {
    let active = true;
    loadDemo().then(
      (d) => active && setDemo(d),
      (e) => active && setError(e.message),
    );
    return () => {
      active = false;
    };
  }, []);

  useEffect(() => {
    const onPop = () => setLocation(readLocation());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);

  const navigate = useCallback((next, { replace = false } = {}) => {
    window.history[replace ? "replaceState" : "pushState"](null, "", hrefFor(next));
    setLocation(next);
  }, []);

  if (error) {
    return (
      <div className="center-screen">
        <div className="card notice" role="alert">
          <h1>The demo could not start</h1>
          <p>{error}</p>
        </div>
      </div>
    );
  }
  if (!demo) {
    return (
      <div className="center-screen">
        <p className="muted">Loading the demo…</p>
      </div>
    );
  }

  // The token's workspaces, or #team, which the session opens only for its members.
  const known = [...demo.workspaces, TEAM].includes(location.workspace);
  const workspace = known ? location.workspace : demo.workspaces[0];
  const me = demo.users.find((u) => u.id === location.user);
  if (!me) return <Welcome users={demo.users} onPick={(user) => navigate({ user, workspace })} />;
  return (
    <Session
      key={me.id}
      demo={demo}
      me={me}
      workspace={workspace}
      onWorkspace={(w, options) => navigate({ user: me.id, workspace: w }, options)}
      onSignOut={() => navigate({ user: null, workspace })}
    />
  );
}
