// Package conformance runs the upstream MCS API conformance suite
// (sigs.k8s.io/mcs-api/conformance, tag conformance/v0.5.0) as one Ginkgo suite.
//
// Its specs register themselves when the package is imported; this file only runs
// them, as Cilium's pkg/clustermesh/mcsapi/conformance does. tests/k8s/build.sh
// builds it with `go test -c`; tests/src/bin/shoal_conformance.rs runs the binary
// against real control planes with Shoal, with the suite's own flags:
//
//	mcs-conformance.test --kubeconfig=K --contexts=c0,c1 \
//		--ginkgo.label-filter='!DNS && !Connectivity' --ginkgo.json-report=R
package conformance

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	_ "sigs.k8s.io/mcs-api/conformance"
)

func TestConformance(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "MCS API conformance")
}
