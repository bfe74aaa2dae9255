package store

// This file holds etcd's authorization as m3sup sets it up: etcd's own
// auth, enabled once, where the user of a request is the common name of
// the client certificate it came with (etcd does that for a TLS client
// that sends no token). m3sup creates one user per certificate identity
// and gives each a role:
//
//	user                     role            may
//	root (no password)       root            (etcd requires it to enable auth)
//	pki.NodeCN(host), voter  root            everything: m3sup's keys, members, auth
//	pki.M3CN(host)           m3              read and write M3's keys (every key
//	                                         starting with "_": _sd.placement/,
//	                                         _sd.metadata/, _kv/, _hb/, _ld/) only
//	pki.NodeCN(host), client m3sup-client    read /m3sup/v1/ and write it, except
//	                                         /m3sup/v1/tokens/ (only the CA holder
//	                                         mints tokens); M3's keys
//	pki.NodeCN(removed host) m3sup-removed   read the tombstones and leaving records
//	                                         only (so a removed host that comes back
//	                                         learns who removed it, and nothing else)
//
// A certificate from the CA whose CN names no user is refused every
// request ("user name not found"); so is the member certificate
// (pki.EtcdPeerCN) on the client port, and etcd's gRPC gateway ignores
// common names altogether, so plain HTTP+JSON requests get nothing either.

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Roles m3sup creates in etcd.
const (
	RootUser       = "root"
	RoleRoot       = "root"
	RoleM3         = "m3"
	RoleClientHost = "m3sup-client"
	RoleRemoved    = "m3sup-removed"
)

// RemovedPrefix and LeavingPrefix are the cluster package's tombstone and
// leaving-record prefixes (supervisor/cluster imports store, not the other
// way; a test in supervisor checks that they agree).
const (
	RemovedPrefix = Prefix + "removed/"
	LeavingPrefix = Prefix + "leaving/"
)

// M3KeyPrefix is the first byte of every key M3 v1.5 keeps in etcd (its
// client's internalPrefix): placement and metadata (_sd.placement/,
// _sd.metadata/), the KV store (_kv/), heartbeats (_hb/) and elections
// (_ld/).
const M3KeyPrefix = "_"

// TokensPrefix is where join tokens live (the join package's
// TokenPrefix); a client-only host may not write or read there.
const TokensPrefix = Prefix + "tokens/"

// perm is one key-range permission of a role.
type perm struct {
	key, end string
	typ      clientv3.PermissionType
}

// prefixEnd is clientv3.GetPrefixRangeEnd.
func prefixEnd(p string) string { return clientv3.GetPrefixRangeEnd(p) }

// rolePerms lists the permissions of m3sup's non-root roles.
func rolePerms() map[string][]perm {
	rw := clientv3.PermissionType(clientv3.PermReadWrite)
	m3 := perm{M3KeyPrefix, prefixEnd(M3KeyPrefix), rw}
	read := clientv3.PermissionType(clientv3.PermRead)
	return map[string][]perm{
		RoleM3: {m3},
		RoleRemoved: {
			{RemovedPrefix, prefixEnd(RemovedPrefix), read},
			{LeavingPrefix, prefixEnd(LeavingPrefix), read},
		},
		// /m3sup/v1/ split around /m3sup/v1/tokens/ (permissions only add).
		RoleClientHost: {
			{Prefix, TokensPrefix, rw},
			{prefixEnd(TokensPrefix), prefixEnd(Prefix), rw},
			m3,
		},
	}
}

// Identities are the etcd users EnsureAuth creates: certificate CNs.
type Identities struct {
	// Admins get the root role: every voter's pki.NodeCN. It must include
	// the identity the enabling client acts as, or it would lock itself out.
	Admins []string
	// M3 are the CNs of M3's certificates (pki.M3CN).
	M3 []string
	// Clients get RoleClientHost: the client-only hosts known now (a host
	// that joins later is given its user by the join, Authorize).
	Clients []string
}

// EnsureAuth sets up etcd's authorization (the table above) and turns it
// on, if it is not on yet: the roles, the users root and ids. cli must act
// as an admin already (before auth is on, anyone may; after, only root
// users). Existing users keep their roles (a client is never demoted or
// promoted here). It is idempotent: run it at every start of a host that
// holds the CA (it creates the cluster, and takes over a cluster from a
// version without auth).
func EnsureAuth(ctx context.Context, cli *clientv3.Client, ids Identities) error {
	if len(ids.Admins) == 0 {
		return errors.New("enable etcd auth: no admin user (the enabling client would lock itself out)")
	}
	for role, perms := range rolePerms() {
		if err := ensureRole(ctx, cli, role, perms); err != nil {
			return err
		}
	}
	if err := EnsureUser(ctx, cli, RootUser, RoleRoot); err != nil {
		return err
	}
	for _, a := range ids.Admins {
		if err := EnsureUser(ctx, cli, a, RoleRoot); err != nil {
			return err
		}
	}
	for _, m := range ids.M3 {
		if err := EnsureUser(ctx, cli, m, RoleM3); err != nil {
			return err
		}
	}
	for _, c := range ids.Clients {
		if err := ensureUserExists(ctx, cli, c, RoleClientHost); err != nil {
			return err
		}
	}
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("read etcd auth status: %w", err)
	}
	if st.Enabled {
		return nil
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable etcd auth: %w", err)
	}
	return nil
}

// ensureUserExists creates user with role only if there is no such user.
func ensureUserExists(ctx context.Context, cli *clientv3.Client, user, role string) error {
	if _, err := cli.UserGet(ctx, user); err == nil {
		return nil
	} else if !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("read etcd user %s: %w", user, err)
	}
	return EnsureUser(ctx, cli, user, role)
}

// EnsureUser creates a password-less user (it authenticates by its
// certificate's CN only) with role, if missing, and grants role.
func EnsureUser(ctx context.Context, cli *clientv3.Client, user, role string) error {
	_, err := cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true})
	if err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		return fmt.Errorf("create etcd user %s: %w", user, err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("grant etcd role %s to %s: %w", role, user, err)
	}
	return nil
}

// SetUserRole makes role the only role of user (created if missing): a
// host that joins again under a name in another role loses the old one.
// One of m3sup's roles is created if missing.
func SetUserRole(ctx context.Context, cli *clientv3.Client, user, role string) error {
	if perms, ok := rolePerms()[role]; ok {
		if err := ensureRole(ctx, cli, role, perms); err != nil {
			return err
		}
	}
	if err := EnsureUser(ctx, cli, user, role); err != nil {
		return err
	}
	u, err := cli.UserGet(ctx, user)
	if err != nil {
		return fmt.Errorf("read etcd user %s: %w", user, err)
	}
	for _, r := range u.Roles {
		if r == role {
			continue
		}
		if _, err := cli.UserRevokeRole(ctx, user, r); err != nil {
			return fmt.Errorf("revoke etcd role %s from %s: %w", r, user, err)
		}
	}
	return nil
}

// DeleteUser removes user (a removed host's identity): its certificate,
// if still presented, is refused every request. No such user is no error.
func DeleteUser(ctx context.Context, cli *clientv3.Client, user string) error {
	if _, err := cli.UserDelete(ctx, user); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("delete etcd user %s: %w", user, err)
	}
	return nil
}

func ensureRole(ctx context.Context, cli *clientv3.Client, role string, perms []perm) error {
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("create etcd role %s: %w", role, err)
	}
	cur, err := cli.RoleGet(ctx, role)
	if err != nil {
		return fmt.Errorf("read etcd role %s: %w", role, err)
	}
	for _, p := range perms {
		if slices.ContainsFunc(cur.Perm, func(q *authpb.Permission) bool {
			return string(q.Key) == p.key && string(q.RangeEnd) == p.end && clientv3.PermissionType(q.PermType) == p.typ
		}) {
			continue
		}
		if _, err := cli.RoleGrantPermission(ctx, role, p.key, p.end, p.typ); err != nil {
			return fmt.Errorf("grant etcd role %s %v on [%q, %q): %w", role, p.typ, p.key, p.end, err)
		}
	}
	return nil
}

// EnsurePeerURL sets member id's peer URL to peerURL if it differs: a
// single node that served plain HTTP before keeps its data dir, whose
// membership still records the http:// peer URL. It reports whether it
// changed the URL.
func EnsurePeerURL(ctx context.Context, cli *clientv3.Client, id uint64, peerURL string) (bool, error) {
	ms, err := Members(ctx, cli)
	if err != nil {
		return false, fmt.Errorf("check the etcd member's peer URL: %w", err)
	}
	for _, m := range ms {
		if m.ID != id {
			continue
		}
		if slices.Equal(m.PeerURLs, []string{peerURL}) {
			return false, nil
		}
		if _, err := cli.MemberUpdate(ctx, id, []string{peerURL}); err != nil {
			return false, fmt.Errorf("update the etcd member's peer URL %v → %s: %w", m.PeerURLs, peerURL, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("check the etcd member's peer URL: member %x: %w", id, ErrNotMember)
}
