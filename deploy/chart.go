package deploy

import "embed"

// ChartDir is the chart's directory, relative to this package and inside
// Chart.
const ChartDir = "charts/vllm-modelcar"

// ChartName is the name in the chart's Chart.yaml.
const ChartName = "vllm-modelcar"

// Chart holds the files of the vllm-modelcar chart under ChartDir
// (.helmignore included), for rendering it from inside the modelcar binary.
//
//go:embed all:charts/vllm-modelcar
var Chart embed.FS
