import Avatar from "./Avatar.jsx";
import Logo from "./Logo.jsx";
import NotificationBell from "./NotificationBell.jsx";
import StatusDot from "./StatusDot.jsx";

export default function Header({ me, socketStatus, inbox, names, onSignOut }) {
  return (
    <header className="topbar">
      <div className="brand">
        <Logo />
        <span className="brand-name">Switchboard</span>
        <span className="tag">demo</span>
      </div>
      <div className="topbar-status">
        <StatusDot label="Socket.IO" status={socketStatus} />
        <StatusDot label="SSE" status={inbox.status} />
      </div>
      <div className="topbar-right">
        <NotificationBell inbox={inbox} names={names} />
        <div className="me" data-testid="me">
          <Avatar userId={me.id} name={me.name} />
          <span className="me-name">{me.name}</span>
        </div>
        <button type="button" className="ghost" onClick={onSignOut}>
          Switch user
        </button>
      </div>
    </header>
  );
}
