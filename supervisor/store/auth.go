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
//	pki.M3CN                 m3              read and write M3's keys (every key
//	                                         starting with "_": _sd.placement/,
//	                                         _sd.metadata/, _kv/, _hb/, _ld/) only
//	pki.NodeCN(host), client m3sup-client    read /m3sup/v1/ and write it, except
//	                                         /m3sup/v1/tokens/ (only the CA holder
//	                                         mints tokens); M3's keys
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
	return map[string][]perm{
		RoleM3: {m3},
		// /m3sup/v1/ split around /m3sup/v1/tokens/ (permissions only add).
		RoleClientHost: {
			{Prefix, TokensPrefix, rw},
			{prefixEnd(TokensPrefix), prefixEnd(Prefix), rw},
			m3,
		},
	}
}

// EnsureAuth sets up etcd's authorization (the table above) and turns it
// on, if it is not on yet: the roles, the users root and pki.M3CN, and
// every admin (a voter's pki.NodeCN) as a root user. cli must act as an
// admin already (before auth is on, anyone may; after, only root users),
// and admins must include the identity cli acts as, or it would lock
// itself out. It is idempotent: run it at every start of the host that
// creates the cluster (and after an upgrade from a version without auth).
func EnsureAuth(ctx context.Context, cli *clientv3.Client, m3User string, admins ...string) error {
	if len(admins) == 0 {
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
	for _, a := range admins {
		if err := EnsureUser(ctx, cli, a, RoleRoot); err != nil {
			return err
		}
	}
	if m3User != "" {
		if err := EnsureUser(ctx, cli, m3User, RoleM3); err != nil {
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
