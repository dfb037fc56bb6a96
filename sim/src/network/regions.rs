//! Where clusters run, and how far apart that is in milliseconds.
//!
//! Nine real cloud regions with their coordinates. The round trip between two regions
//! follows the model fly.io calibrated on its own network: `4 ms + great-circle km / 75`.
//! One way is half of that. Inside a region a hop takes 1 to 2 ms.

/// A cloud region and where it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub name: &'static str,
    pub city: &'static str,
    pub lat_deg: f64,
    pub lon_deg: f64,
}

pub const REGIONS: [Region; 9] = [
    Region {
        name: "us-east",
        city: "Virginia",
        lat_deg: 39.04,
        lon_deg: -77.49,
    },
    Region {
        name: "us-west",
        city: "Oregon",
        lat_deg: 45.84,
        lon_deg: -119.70,
    },
    Region {
        name: "sa-east",
        city: "Sao Paulo",
        lat_deg: -23.55,
        lon_deg: -46.63,
    },
    Region {
        name: "eu-west",
        city: "Ireland",
        lat_deg: 53.35,
        lon_deg: -6.26,
    },
    Region {
        name: "eu-central",
        city: "Frankfurt",
        lat_deg: 50.11,
        lon_deg: 8.68,
    },
    Region {
        name: "ap-south",
        city: "Mumbai",
        lat_deg: 19.08,
        lon_deg: 72.88,
    },
    Region {
        name: "ap-southeast",
        city: "Singapore",
        lat_deg: 1.35,
        lon_deg: 103.82,
    },
    Region {
        name: "ap-northeast",
        city: "Tokyo",
        lat_deg: 35.68,
        lon_deg: 139.69,
    },
    Region {
        name: "ap-southeast-2",
        city: "Sydney",
        lat_deg: -33.87,
        lon_deg: 151.21,
    },
];

const EARTH_RADIUS_KM: f64 = 6_371.0;
/// Fixed part of an inter-region round trip.
const RTT_BASE_MS: f64 = 4.0;
/// Kilometres of great circle per millisecond of round trip.
const KM_PER_RTT_MS: f64 = 75.0;
/// A one-way hop inside one region: at least this, plus up to as much again.
pub const INTRA_REGION_ONE_WAY_US: u64 = 1_000;

/// Great-circle distance (haversine).
pub fn great_circle_km(a: &Region, b: &Region) -> f64 {
    let (lat1, lat2) = (a.lat_deg.to_radians(), b.lat_deg.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon_deg - a.lon_deg).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

/// Round trip between two regions, in milliseconds. Same region: two intra-region hops.
pub fn rtt_ms(a: usize, b: usize) -> f64 {
    if a == b {
        return 2.0 * INTRA_REGION_ONE_WAY_US as f64 / 1_000.0;
    }
    RTT_BASE_MS + great_circle_km(&REGIONS[a], &REGIONS[b]) / KM_PER_RTT_MS
}

/// The base one-way latency between two regions, before jitter, in microseconds.
pub fn one_way_us(a: usize, b: usize) -> u64 {
    if a == b {
        return INTRA_REGION_ONE_WAY_US;
    }
    (rtt_ms(a, b) * 500.0).round() as u64
}

/// A precomputed table of one-way latencies between regions.
#[derive(Clone, Debug)]
pub struct LatencyTable {
    one_way_us: [[u64; REGIONS.len()]; REGIONS.len()],
}

impl Default for LatencyTable {
    fn default() -> Self {
        let mut one_way = [[0; REGIONS.len()]; REGIONS.len()];
        for (a, row) in one_way.iter_mut().enumerate() {
            for (b, cell) in row.iter_mut().enumerate() {
                *cell = one_way_us(a, b);
            }
        }
        Self {
            one_way_us: one_way,
        }
    }
}

impl LatencyTable {
    /// Base one-way latency in microseconds.
    pub fn one_way_us(&self, a: usize, b: usize) -> u64 {
        self.one_way_us[a][b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_gives_plausible_round_trips() {
        let virginia_frankfurt = rtt_ms(0, 4);
        assert!(
            (80.0..110.0).contains(&virginia_frankfurt),
            "{virginia_frankfurt}"
        );
        let sao_paulo_sydney = rtt_ms(2, 8);
        assert!(
            (150.0..200.0).contains(&sao_paulo_sydney),
            "{sao_paulo_sydney}"
        );
        assert_eq!(one_way_us(3, 3), INTRA_REGION_ONE_WAY_US);
        assert_eq!(one_way_us(1, 7), one_way_us(7, 1));
    }
}
