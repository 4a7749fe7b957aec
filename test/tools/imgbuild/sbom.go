package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// SPDX 2.3 JSON (https://spdx.github.io/spdx-spec/v2.3/), the subset
// imgbuild writes.
type spdxDoc struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	DocumentDescribes []string           `json:"documentDescribes"`
	Packages          []spdxPackage      `json:"packages"`
	Files             []spdxFile         `json:"files"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID           string        `json:"SPDXID"`
	Name             string        `json:"name"`
	VersionInfo      string        `json:"versionInfo,omitempty"`
	Supplier         string        `json:"supplier,omitempty"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	LicenseConcluded string        `json:"licenseConcluded"`
	LicenseDeclared  string        `json:"licenseDeclared"`
	CopyrightText    string        `json:"copyrightText"`
	PrimaryPurpose   string        `json:"primaryPackagePurpose,omitempty"`
	ExternalRefs     []spdxExtRef  `json:"externalRefs,omitempty"`
	Checksums        []spdxSummary `json:"checksums,omitempty"`
}

type spdxExtRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxSummary struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxFile struct {
	SPDXID           string        `json:"SPDXID"`
	FileName         string        `json:"fileName"`
	FileTypes        []string      `json:"fileTypes,omitempty"`
	Checksums        []spdxSummary `json:"checksums"`
	LicenseConcluded string        `json:"licenseConcluded"`
	CopyrightText    string        `json:"copyrightText"`
	Comment          string        `json:"comment,omitempty"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// sbomFile is one file of the image: its path, platform ("" for the base,
// which is the same on every platform) and content.
type sbomFile struct {
	Path, Platform string
	Data           []byte
	Binary         bool
}

var spdxIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

func spdxID(kind string, parts ...string) string {
	return "SPDXRef-" + kind + "-" + spdxIDUnsafe.ReplaceAllString(strings.Join(parts, "-"), "-")
}

func checksums(b []byte) []spdxSummary {
	s1, s256 := sha1.Sum(b), sha256.Sum256(b)
	return []spdxSummary{{"SHA1", hex.EncodeToString(s1[:])}, {"SHA256", hex.EncodeToString(s256[:])}}
}

// makeSBOM describes one image (all its platforms): the image as the
// primary package, each file it holds, the Go modules and the Go standard
// library each binary was built from (read back from the binary's build
// info, so the list is what was linked, not what go.mod requires), and the
// Debian package the CA bundle comes from.
func makeSBOM(title, version, revision string, created time.Time, files []sbomFile, caPackage, caVersion string) (*spdxDoc, error) {
	image := "SPDXRef-Image"
	doc := &spdxDoc{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              title + "-" + version,
		DocumentNamespace: fmt.Sprintf("https://github.com/dumpcatcher/dumpcatcher/spdx/%s/%s/%s", title, version, revision),
		CreationInfo: spdxCreationInfo{
			Created:  created.UTC().Format(time.RFC3339),
			Creators: []string{"Organization: dumpcatcher", "Tool: dumpcatcher-imgbuild"},
		},
		DocumentDescribes: []string{image},
	}
	doc.Packages = append(doc.Packages, spdxPackage{
		SPDXID: image, Name: title, VersionInfo: version,
		DownloadLocation: "git+https://github.com/dumpcatcher/dumpcatcher@" + revision,
		LicenseConcluded: "NOASSERTION", LicenseDeclared: "Apache-2.0", CopyrightText: "NOASSERTION",
		PrimaryPurpose: "CONTAINER",
	})
	rel := func(a, typ, b string) {
		doc.Relationships = append(doc.Relationships, spdxRelationship{a, typ, b})
	}
	rel(doc.SPDXID, "DESCRIBES", image)
	pkgs := map[string]bool{}
	addPkg := func(p spdxPackage) {
		if !pkgs[p.SPDXID] {
			pkgs[p.SPDXID] = true
			doc.Packages = append(doc.Packages, p)
		}
	}
	if caPackage != "" {
		id := spdxID("Package-deb", caPackage)
		addPkg(spdxPackage{
			SPDXID: id, Name: caPackage, VersionInfo: caVersion, Supplier: "Organization: Debian",
			DownloadLocation: "NOASSERTION", LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION",
			CopyrightText: "NOASSERTION",
			ExternalRefs: []spdxExtRef{{"PACKAGE-MANAGER", "purl",
				fmt.Sprintf("pkg:deb/debian/%s@%s", caPackage, caVersion)}},
		})
		rel(image, "CONTAINS", id)
	}
	for _, f := range files {
		id := spdxID("File", f.Platform, f.Path)
		sf := spdxFile{
			SPDXID: id, FileName: "." + f.Path, Checksums: checksums(f.Data),
			LicenseConcluded: "NOASSERTION", CopyrightText: "NOASSERTION",
		}
		if f.Platform != "" {
			sf.Comment = "platform " + f.Platform
		}
		rel(image, "CONTAINS", id)
		if !f.Binary {
			sf.FileTypes = []string{"TEXT"}
			if f.Path == "/etc/ssl/certs/ca-certificates.crt" && caPackage != "" {
				rel(id, "GENERATED_FROM", spdxID("Package-deb", caPackage))
			}
			doc.Files = append(doc.Files, sf)
			continue
		}
		sf.FileTypes = []string{"BINARY"}
		doc.Files = append(doc.Files, sf)
		bi, err := buildinfo.Read(bytes.NewReader(f.Data))
		if err != nil {
			return nil, fmt.Errorf("%s (%s): build info: %v", f.Path, f.Platform, err)
		}
		goID := spdxID("Package-go", "stdlib", bi.GoVersion)
		addPkg(spdxPackage{
			SPDXID: goID, Name: "stdlib", VersionInfo: bi.GoVersion, Supplier: "Organization: Go",
			DownloadLocation: "https://go.dev/dl/", LicenseConcluded: "NOASSERTION", LicenseDeclared: "BSD-3-Clause",
			CopyrightText: "NOASSERTION",
			ExternalRefs:  []spdxExtRef{{"PACKAGE-MANAGER", "purl", "pkg:golang/stdlib@" + bi.GoVersion}},
		})
		rel(id, "DEPENDS_ON", goID)
		for _, d := range bi.Deps {
			m := d
			if m.Replace != nil {
				m = m.Replace
			}
			mid := spdxID("Package-go", m.Path, m.Version)
			addPkg(spdxPackage{
				SPDXID: mid, Name: m.Path, VersionInfo: m.Version,
				DownloadLocation: fmt.Sprintf("https://proxy.golang.org/%s/@v/%s.zip", m.Path, m.Version),
				LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION", CopyrightText: "NOASSERTION",
				ExternalRefs: []spdxExtRef{{"PACKAGE-MANAGER", "purl", fmt.Sprintf("pkg:golang/%s@%s", m.Path, m.Version)}},
			})
			rel(id, "DEPENDS_ON", mid)
		}
		rel(id, "GENERATED_FROM", image) // the project's own source, at revision
	}
	sort.SliceStable(doc.Packages[1:], func(i, j int) bool { return doc.Packages[i+1].SPDXID < doc.Packages[j+1].SPDXID })
	return doc, nil
}
