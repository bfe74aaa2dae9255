// Package bundle fetches release artifacts and verifies them: it downloads
// one file per source with go-getter (http, https, file and plain paths only),
// insists on a sha256 checksum, caps each download (Options.MaxDownload,
// 2 GiB by default), keeps every verified artifact in a content-addressed
// cache with atomic commits, and extracts tar and tar.gz archives safely (no
// links, no device nodes, no paths outside the target, bounded in files and
// bytes). It also makes, verifies (optionally signed with ed25519) and
// imports air-gap bundles: one file that carries the M3 release, image
// archives and binaries to a host with no network (see Create, Verify and
// Cache.ImportBundle). Signed means verified: a bundle's binaries and image
// archives are used only when a trusted key's signature was checked
// (VerifyOptions.TrustedKeys); releases need only their manifest sha256.
//
// bundle knows nothing of M3 clusters; it does not import supervisor or
// runtime.
//
// On disk, under the cache directory:
//
//	sha256/<hex>      verified artifacts, named by their digest
//	tmp/              downloads in flight; never trusted
//	refs/<key>        digest resolved from a "file:" checksums URL, per source
//	unpacked/<hex>/   extracted archives, each with a .m3sup-manifest.json
//	corrupt/          cached artifacts that failed re-verification, kept for
//	                  inspection
//	images/<hex>.tar  image archives imported from air-gap bundles
//	bin/<hex>/<name>  executables imported from air-gap bundles
package bundle
