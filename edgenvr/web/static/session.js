// Who is signed in, shared by the views (filled from /api/me or the sign-in answer).

export const session = { user: null, box: null };

export function signedIn(user, box) {
  session.user = user;
  if (box) session.box = box;
}

export function signedOut() {
  session.user = null;
}

/** Whether the signed-in user's role has `permission` (view, export, hold, manage_users, ...). */
export function may(permission) {
  return Boolean(session.user?.permissions?.includes(permission));
}
