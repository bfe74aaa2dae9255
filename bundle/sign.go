package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
)

// Bundle signing keys are ed25519 keys in PEM: the private key as PKCS #8
// ("PRIVATE KEY"), the public key as PKIX ("PUBLIC KEY"). That is what
// `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write, so
// keys made elsewhere work and ours can be inspected with standard tools.
// Encrypted private keys are not supported.

const (
	pemPrivateKey = "PRIVATE KEY"
	pemPublicKey  = "PUBLIC KEY"
	sigAlgorithm  = "ed25519"
	// maxSignature bounds manifest.sig.
	maxSignature = 64 << 10
)

// GenerateKey makes a new ed25519 key pair and writes the private key to
// priv and the public key to pub, both PEM. It returns the key's ID.
func GenerateKey(priv, pub io.Writer) (string, error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	skDER, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	pkDER, err := x509.MarshalPKIXPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	if err := pem.Encode(priv, &pem.Block{Type: pemPrivateKey, Bytes: skDER}); err != nil {
		return "", fmt.Errorf("write private key: %w", err)
	}
	if err := pem.Encode(pub, &pem.Block{Type: pemPublicKey, Bytes: pkDER}); err != nil {
		return "", fmt.Errorf("write public key: %w", err)
	}
	return KeyID(pk), nil
}

// ParsePrivateKey reads a PEM PKCS #8 ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, err := onePEM(data, pemPrivateKey)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	sk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse private key: %T is not an ed25519 key", k)
	}
	return sk, nil
}

// ParsePublicKey reads a PEM PKIX ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, err := onePEM(data, pemPublicKey)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("parse public key: %T is not an ed25519 key", k)
	}
	return pk, nil
}

func onePEM(data []byte, typ string) (*pem.Block, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM %q block", typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, typ)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block")
	}
	return block, nil
}

// KeyID names a public key: the first 16 hex characters of the sha256 of
// its 32 bytes.
func KeyID(pk ed25519.PublicKey) string {
	sum := sha256.Sum256(pk)
	return hex.EncodeToString(sum[:8])
}

// signatureFile is manifest.sig: an ed25519 signature over the exact bytes
// of manifest.json.
type signatureFile struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"keyId"`     // informative; every trusted key is tried
	Signature []byte `json:"signature"` // 64 bytes, base64 in JSON
}

func signManifest(sk ed25519.PrivateKey, manifestJSON []byte) ([]byte, error) {
	if len(sk) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign manifest: private key has %d bytes, want %d", len(sk), ed25519.PrivateKeySize)
	}
	pk, _ := sk.Public().(ed25519.PublicKey)
	sig := signatureFile{Algorithm: sigAlgorithm, KeyID: KeyID(pk), Signature: ed25519.Sign(sk, manifestJSON)}
	data, err := json.MarshalIndent(sig, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("sign manifest: %w", err)
	}
	return append(data, '\n'), nil
}

// parseSignature decodes manifest.sig strictly: one JSON object with the
// known fields only, algorithm ed25519 and a 64-byte signature. A malformed
// signature fails with ErrSignature whether or not keys are given to check
// it: it can only come from a broken or tampered bundle.
func parseSignature(sigJSON []byte) (signatureFile, error) {
	var sig signatureFile
	dec := json.NewDecoder(bytes.NewReader(sigJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sig); err != nil {
		return signatureFile{}, fmt.Errorf("%s: %v: %w", BundleSignatureName, err, ErrSignature)
	}
	if dec.More() {
		return signatureFile{}, fmt.Errorf("%s: data after the JSON object: %w", BundleSignatureName, ErrSignature)
	}
	if sig.Algorithm != sigAlgorithm {
		return signatureFile{}, fmt.Errorf("%s: algorithm %q, want %q: %w", BundleSignatureName, sig.Algorithm, sigAlgorithm, ErrSignature)
	}
	if len(sig.Signature) != ed25519.SignatureSize {
		return signatureFile{}, fmt.Errorf("%s: signature has %d bytes, want %d: %w", BundleSignatureName, len(sig.Signature), ed25519.SignatureSize, ErrSignature)
	}
	return sig, nil
}

// checkSignature verifies sigJSON over manifestJSON with each trusted key
// and returns the ID of the key that made it.
func checkSignature(sigJSON, manifestJSON []byte, trusted []ed25519.PublicKey) (string, error) {
	sig, err := parseSignature(sigJSON)
	if err != nil {
		return "", err
	}
	for _, pk := range trusted {
		if len(pk) == ed25519.PublicKeySize && ed25519.Verify(pk, manifestJSON, sig.Signature) {
			return KeyID(pk), nil
		}
	}
	return "", fmt.Errorf("manifest is not signed by any of the %d trusted keys (it names key %q): %w", len(trusted), sig.KeyID, ErrSignature)
}
