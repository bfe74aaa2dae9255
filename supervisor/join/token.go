package join

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// ErrRefused marks a join the other side refused or that must not proceed:
// a bad, unknown, revoked or expired token, a CA that does not match the
// pin, plain HTTP.
var ErrRefused = errors.New("join refused")

// ErrInvalidToken means a string is not a join token.
var ErrInvalidToken = errors.New("invalid join token")

const (
	tokenPrefix  = "K10"
	idLen        = 6
	secretLen    = 32
	tokenCharset = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// Token is a join token: K10<ca-sha256-hex>::<id>.<secret>
//
//   - ca-sha256-hex: 64 lowercase hex digits, the SHA-256 of the cluster CA
//     certificate's DER (pki.Fingerprint without "sha256:");
//   - id: 6 characters [a-z0-9], names the token in etcd and in `token list`;
//   - secret: 32 characters [a-z0-9] (~165 bits); etcd keeps only its SHA-256.
type Token struct {
	CAHash string
	ID     string
	Secret string
}

// ParseToken parses the full form of a token. Short forms without the CA
// hash are refused: without the pin the joiner cannot check the server.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), tokenPrefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: want %s<ca-hash>::<id>.<secret>", ErrInvalidToken, tokenPrefix)
	}
	hash, cred, ok := strings.Cut(rest, "::")
	if !ok {
		return Token{}, fmt.Errorf("%w: no \"::\" after the CA hash", ErrInvalidToken)
	}
	id, secret, ok := strings.Cut(cred, ".")
	if !ok {
		return Token{}, fmt.Errorf("%w: want <id>.<secret> after \"::\"", ErrInvalidToken)
	}
	t := Token{CAHash: hash, ID: id, Secret: secret}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// Validate checks each part's shape.
func (t Token) Validate() error {
	if len(t.CAHash) != 64 || !only(t.CAHash, "0123456789abcdef") {
		return fmt.Errorf("%w: CA hash must be 64 lowercase hex digits", ErrInvalidToken)
	}
	if err := ValidateID(t.ID); err != nil {
		return err
	}
	if len(t.Secret) != secretLen || !only(t.Secret, tokenCharset) {
		return fmt.Errorf("%w: secret must be %d characters [a-z0-9]", ErrInvalidToken, secretLen)
	}
	return nil
}

// ValidateID checks a token ID's shape.
func ValidateID(id string) error {
	if len(id) != idLen || !only(id, tokenCharset) {
		return fmt.Errorf("%w: id %q must be %d characters [a-z0-9]", ErrInvalidToken, id, idLen)
	}
	return nil
}

// Encode returns the token's full text, secret included.
func (t Token) Encode() string {
	return tokenPrefix + t.CAHash + "::" + t.ID + "." + t.Secret
}

// String returns the token with its secret redacted, so that logging a
// Token by accident leaks nothing.
func (t Token) String() string {
	return tokenPrefix + t.CAHash + "::" + t.ID + ".<redacted>"
}

// CAFingerprint returns the pinned CA in pki.Fingerprint's form.
func (t Token) CAFingerprint() string { return "sha256:" + t.CAHash }

func only(s, charset string) bool {
	for _, r := range s {
		if !strings.ContainsRune(charset, r) {
			return false
		}
	}
	return true
}

// randomString returns n characters drawn uniformly from tokenCharset.
func randomString(n int) (string, error) {
	const maxByte = 256 - 256%len(tokenCharset) // reject bytes that would bias the draw
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("random token: %w", err)
		}
		for _, b := range buf {
			if int(b) < maxByte && len(out) < n {
				out = append(out, tokenCharset[int(b)%len(tokenCharset)])
			}
		}
	}
	return string(out), nil
}
